//! Silero voice activity detection as faster-whisper 1.2.1 runs it (`vad_filter`): the
//! speech probability of every 32 ms window from faster-whisper's own
//! `silero_vad_v6.onnx`, its `get_speech_timestamps` state machine, and the mapping of
//! times from the speech-only signal back to the recording.
//!
//! The ONNX graph is run by a forward pass written here rather than by an ONNX runtime
//! crate: the graph is small and fixed (a reflect-padded STFT as a convolution, four
//! convolutions, one LSTM, a 1×1 convolution), and a runtime would mean a build-time
//! download or a second native library (onnxruntime) next to CTranslate2, or a newer
//! MSRV (tract). The weights are read from the file's protobuf with the small reader in
//! [`onnx`]; every node of the graph is checked on load (operators, wiring, attributes,
//! constants, shapes), so another file is refused instead of giving wrong numbers. The
//! probabilities match onnxruntime's within 1e-5 on the same samples (`worker/tests/vad.rs`).
//!
//! Speed: the convolutions of all windows are independent, so they run as matrix
//! products over blocks of windows ([`gemm`]: contiguous dot products the compiler
//! vectorises, with AVX2/FMA builds of the same code picked at run time); only the
//! LSTM, a 512×128 product per window, runs window after window, with activations
//! computed without library calls so that they vectorise too.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Samples per window (32 ms at 16 kHz): one probability each.
const WINDOW: usize = 512;
/// Samples of the previous window put in front of each window.
const CONTEXT: usize = 64;
/// One model input row: context and window.
const ROW: usize = CONTEXT + WINDOW;
/// The STFT as the graph computes it: reflect padding of each row by 128 on both sides,
/// 256-sample frames every 128 samples (a convolution with 258 basis rows: 129 real, 129
/// imaginary), the first frame dropped.
const STFT_PAD: usize = 128;
const N_FFT: usize = 256;
const HOP: usize = 128;
const N_FREQ: usize = N_FFT / 2 + 1;
const N_FRAMES: usize = (ROW + 2 * STFT_PAD - N_FFT) / HOP; // 4, after dropping frame 0
/// LSTM width.
const HIDDEN: usize = 128;
/// Windows whose convolutions are computed together before the LSTM runs over them.
const BLOCK: usize = 32;
const SAMPLE_RATE: usize = 16_000;
/// Largest model file accepted (the real one is 1.2 MB).
const MAX_MODEL_BYTES: u64 = 64 << 20;

/// faster-whisper's `VadOptions`, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VadOptions {
    /// Probability at or above which a window is speech.
    pub threshold: f32,
    /// Probability below which speech ends; `None`: `max(threshold − 0.15, 0.01)`.
    pub neg_threshold: Option<f32>,
    /// Speech chunks this short or shorter are dropped.
    pub min_speech_duration_ms: u32,
    /// Longer speech is split (at a silence of more than 98 ms if there is one).
    /// Infinite by default; written as `null` in JSON, which has no infinity.
    #[serde(with = "infinite_as_null")]
    pub max_speech_duration_s: f32,
    /// Silence that ends a speech chunk.
    pub min_silence_duration_ms: u32,
    /// Padding added on both sides of each speech chunk.
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: f32::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

/// `f32::INFINITY` as JSON `null` and back (serde_json would write `null` and then fail
/// to read it).
mod infinite_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f32, s: S) -> Result<S::Ok, S::Error> {
        if value.is_infinite() && value.is_sign_positive() {
            s.serialize_none()
        } else {
            s.serialize_f32(*value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::INFINITY))
    }
}

/// The VAD model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("cannot read the VAD model '{path}' (scripts/fetch-vad.sh fetches it)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{path}' is not faster-whisper's silero_vad_v6.onnx: {detail}")]
    Model { path: PathBuf, detail: String },
}

impl VadError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } | Self::Model { .. } => "vad-unavailable",
        }
    }
}

/// One convolution of the encoder, followed by ReLU as in the graph.
struct Conv {
    /// `[out][kernel][in]`: the ONNX `[out][in][kernel]` weight reordered so that one
    /// output is a dot product with consecutive input frames (channels contiguous).
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
}

impl Conv {
    fn out_len(&self, l_in: usize) -> usize {
        (l_in + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// `act` is `[rows][l_in][c_in]`; `out` becomes `[rows][l_out][c_out]`, ReLU applied.
    fn forward(&self, act: &[f32], l_in: usize, col: &mut Vec<f32>, out: &mut Vec<f32>) {
        let l_out = self.out_len(l_in);
        let width = self.kernel * self.c_in;
        let rows = act.len() / (l_in * self.c_in);
        col.clear();
        col.resize(rows * l_out * width, 0.0);
        for (a, c) in act
            .chunks_exact(l_in * self.c_in)
            .zip(col.chunks_exact_mut(l_out * width))
        {
            for (t, ct) in c.chunks_exact_mut(width).enumerate() {
                for (k, dst) in ct.chunks_exact_mut(self.c_in).enumerate() {
                    // Out of range: the zero padding, already in `col`.
                    if let Some(s) = (t * self.stride + k)
                        .checked_sub(self.pad)
                        .filter(|&s| s < l_in)
                    {
                        dst.copy_from_slice(&a[s * self.c_in..(s + 1) * self.c_in]);
                    }
                }
            }
        }
        out.clear();
        out.resize(rows * l_out * self.bias.len(), 0.0);
        gemm(col, &self.weight, &self.bias, width, out);
        for v in out.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// faster-whisper's Silero VAD v6 model, loaded. Immutable: one instance serves any
/// number of threads.
pub struct SileroVad {
    /// `[258][256]`: the real then the imaginary parts of the 129 frequencies.
    basis: Vec<f32>,
    zero_bias: Vec<f32>,
    convs: Vec<Conv>,
    /// LSTM input and recurrent weights, `[4·HIDDEN][·]`, gates in ONNX order i, o, f, c.
    lstm_w: Vec<f32>,
    lstm_r: Vec<f32>,
    /// Input and recurrent biases summed.
    lstm_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: f32,
}

/// Buffers of one `speech_probs` call.
#[derive(Default)]
struct Scratch {
    rows: Vec<f32>,
    frames: Vec<f32>,
    spectrum: Vec<f32>,
    act: Vec<f32>,
    next: Vec<f32>,
    col: Vec<f32>,
    xproj: Vec<f32>,
    gates: Vec<f32>,
    /// ReLU of each window's LSTM output, then the head's logits.
    hidden: Vec<f32>,
    logits: Vec<f32>,
}

impl SileroVad {
    /// Loads faster-whisper's `silero_vad_v6.onnx` (scripts/fetch-vad.sh fetches it).
    pub fn load(path: &Path) -> Result<Self, VadError> {
        let io = |source| VadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |detail: String| VadError::Model {
            path: path.to_path_buf(),
            detail,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_MODEL_BYTES {
            return Err(bad(format!("{size} bytes is too large for this model")));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let graph = onnx::parse_model(&bytes).map_err(bad)?;
        Self::from_graph(&graph).map_err(bad)
    }

    /// Takes the weights from the graph, following its wiring from the input `input` to
    /// the output `speech_probs`, and checks every step against what [`Self::run_block`]
    /// computes.
    fn from_graph(g: &onnx::Graph) -> Result<Self, String> {
        let pad = g.one("input", "Pad")?;
        g.expect_str(pad, "mode", None, "reflect")?;
        let pads = [0, STFT_PAD as i64, 0, STFT_PAD as i64];
        g.expect_const_ints(pad, 1, &pads)?;
        if pad.inputs.get(2).is_some_and(|s| !s.is_empty()) {
            return Err("Pad has a constant value".into());
        }
        let unsqueeze = g.one(pad.output(0), "Unsqueeze")?;
        g.expect_const_ints(unsqueeze, 1, &[1])?;

        let stft = g.one(unsqueeze.output(0), "Conv")?;
        let basis = g.weight(stft, 1, &[2 * N_FREQ, 1, N_FFT])?;
        if stft.inputs.get(2).is_some_and(|s| !s.is_empty()) {
            return Err("the STFT convolution has a bias".into());
        }
        let (stride, conv_pad) = g.conv_attrs(stft, N_FFT)?;
        if (stride, conv_pad) != (HOP, 0) {
            return Err(format!(
                "STFT convolution: stride {stride} and padding {conv_pad}, expected {HOP} and 0"
            ));
        }

        // Two slices of the STFT's [N, 258, 5]: frames 1.., channels 0..129 (real) and
        // 129..258 (imaginary).
        let slices = g.consumers(stft.output(0));
        let mut real = None;
        let mut imag = None;
        for s in &slices {
            if s.op != "Slice" {
                return Err(format!("the STFT feeds {}, expected Slice", s.op));
            }
            let starts = g.const_ints(s.input(1))?;
            let ends = g.const_ints(s.input(2))?;
            let axes = g.const_ints(s.input(3))?;
            let steps_ok = match s.input(4) {
                "" => true,
                steps => g.const_ints(steps)? == [1, 1],
            };
            if axes != [1, 2] || !steps_ok {
                return Err(format!("Slice '{}': unexpected axes or steps", s.output(0)));
            }
            let frames_ok = starts.get(1) == Some(&1) && ends.get(1).is_some_and(|&e| e >= 5);
            let n = N_FREQ as i64;
            match (starts.first(), ends.first()) {
                (Some(0), Some(&e)) if frames_ok && e == n => real = Some(*s),
                (Some(&b), Some(&e)) if frames_ok && b == n && e >= 2 * n => imag = Some(*s),
                _ => return Err(format!("Slice '{}': unexpected range", s.output(0))),
            }
        }
        let (Some(real), Some(imag), 2) = (real, imag, slices.len()) else {
            return Err("the STFT is not split into real and imaginary parts".into());
        };
        let square = |n: &onnx::Node| -> Result<String, String> {
            let pow = g.one(n.output(0), "Pow")?;
            if g.const_f32(pow.input(1))? != [2.0] {
                return Err("Pow with an exponent other than 2".into());
            }
            Ok(pow.output(0).to_string())
        };
        let (re2, im2) = (square(real)?, square(imag)?);
        let add = g.one(&re2, "Add")?;
        if !add.inputs.contains(&im2) {
            return Err("the squared parts are not added".into());
        }
        let mut cur = g.one(add.output(0), "Sqrt")?.output(0);

        let mut convs = Vec::new();
        let (mut len, mut channels) = (N_FRAMES, N_FREQ);
        while let Ok(node) = g.one(cur, "Conv") {
            let dims = g.dims(node.input(1))?;
            let [c_out, c_in, kernel] = dims[..] else {
                return Err(format!("Conv weight of shape {dims:?}"));
            };
            if c_in != channels || c_out == 0 || kernel == 0 {
                return Err(format!(
                    "Conv weight of shape {dims:?} after {channels} channels"
                ));
            }
            let weight = g.weight(node, 1, &[c_out, c_in, kernel])?;
            let bias = g.weight(node, 2, &[c_out])?;
            let (stride, pad) = g.conv_attrs(node, kernel)?;
            if len + 2 * pad < kernel {
                return Err("a convolution is longer than its input".into());
            }
            // [out][in][k] → [out][k][in].
            let mut reordered = vec![0.0; weight.len()];
            for o in 0..c_out {
                for c in 0..c_in {
                    for k in 0..kernel {
                        reordered[(o * kernel + k) * c_in + c] =
                            weight[(o * c_in + c) * kernel + k];
                    }
                }
            }
            let conv = Conv {
                weight: reordered,
                bias: bias.to_vec(),
                c_in,
                kernel,
                stride,
                pad,
            };
            len = conv.out_len(len);
            channels = c_out;
            convs.push(conv);
            cur = g.one(node.output(0), "Relu")?.output(0);
        }
        if convs.len() != 4 || len != 1 || channels != HIDDEN {
            return Err(format!(
                "{} encoder convolutions giving {channels}×{len}, expected 4 giving {HIDDEN}×1",
                convs.len()
            ));
        }

        let transpose = g.one(cur, "Transpose")?;
        g.expect_ints(transpose, "perm", None, &[0, 2, 1])?;
        let lstm = g.one(transpose.output(0), "LSTM")?;
        let gates = 4 * HIDDEN;
        let lstm_w = g.weight(lstm, 1, &[1, gates, HIDDEN])?;
        let lstm_r = g.weight(lstm, 2, &[1, gates, HIDDEN])?;
        let bias = g.weight(lstm, 3, &[1, 2 * gates])?;
        if lstm.inputs.get(4).is_some_and(|s| !s.is_empty())
            || lstm.inputs.get(5).map(String::as_str) != Some("h")
            || lstm.inputs.get(6).map(String::as_str) != Some("c")
            || lstm.inputs.len() > 7
        {
            return Err(format!("LSTM inputs {:?}", lstm.inputs));
        }
        g.expect_ints(lstm, "hidden_size", None, &[HIDDEN as i64])?;
        g.expect_str(lstm, "direction", Some("forward"), "forward")?;
        g.expect_ints(lstm, "input_forget", Some(&[0]), &[0])?;
        g.expect_ints(lstm, "layout", Some(&[0]), &[0])?;
        for name in ["activations", "activation_alpha", "activation_beta", "clip"] {
            if lstm.attr(name).is_some() {
                return Err(format!("LSTM attribute '{name}' is not supported"));
            }
        }
        let lstm_b = bias[..gates]
            .iter()
            .zip(&bias[gates..])
            .map(|(w, r)| w + r)
            .collect();

        let squeeze = g.one(lstm.output(0), "Squeeze")?;
        g.expect_const_ints(squeeze, 1, &[1])?;
        let relu = g.one(squeeze.output(0), "Relu")?;
        let transpose = g.one(relu.output(0), "Transpose")?;
        g.expect_ints(transpose, "perm", None, &[1, 2, 0])?;
        let head = g.one(transpose.output(0), "Conv")?;
        let out_w = g.weight(head, 1, &[1, HIDDEN, 1])?;
        let out_b = g.weight(head, 2, &[1])?;
        if g.conv_attrs(head, 1)? != (1, 0) {
            return Err("the output convolution has a stride or padding".into());
        }
        let sigmoid = g.one(head.output(0), "Sigmoid")?;
        let reshape = g.one(sigmoid.output(0), "Reshape")?;
        g.expect_const_ints(reshape, 1, &[-1])?;
        if reshape.output(0) != "speech_probs" || !g.outputs.iter().any(|o| o == "speech_probs") {
            return Err("the graph does not end in the output 'speech_probs'".into());
        }

        Ok(Self {
            basis: basis.to_vec(),
            zero_bias: vec![0.0; 2 * N_FREQ],
            convs,
            lstm_w: lstm_w.to_vec(),
            lstm_r: lstm_r.to_vec(),
            lstm_b,
            out_w: out_w.to_vec(),
            out_b: out_b[0],
        })
    }

    /// The speech probability of each 512-sample window of 16 kHz mono `samples`, as
    /// faster-whisper's `SileroVADModel(np.pad(audio, (0, 512 − len % 512)))`: one more
    /// window than `len / 512` (a whole silent one when the length is a multiple of 512).
    pub fn speech_probs(&self, samples: &[f32]) -> Vec<f32> {
        let n_windows = samples.len() / WINDOW + 1;
        // faster-whisper zeroes the last 64 samples of the padded signal in place (it
        // writes the first window's zero context through a view of the last one), so
        // samples there never reach the model.
        let visible = &samples[..samples.len().min(n_windows * WINDOW - CONTEXT)];
        let mut probs = Vec::with_capacity(n_windows);
        let mut h = vec![0.0; HIDDEN];
        let mut c = vec![0.0; HIDDEN];
        let mut s = Scratch::default();
        for first in (0..n_windows).step_by(BLOCK) {
            let rows = BLOCK.min(n_windows - first);
            s.rows.clear();
            s.rows.resize(rows * ROW, 0.0);
            for (r, row) in s.rows.chunks_exact_mut(ROW).enumerate() {
                fill_row(visible, first + r, row);
            }
            self.run_block(&mut s, &mut h, &mut c, &mut probs);
        }
        probs
    }

    /// faster-whisper's `get_speech_timestamps(audio, options)`: the speech chunks of
    /// 16 kHz mono `samples`, in samples.
    pub fn speech_timestamps(&self, samples: &[f32], opts: &VadOptions) -> Vec<Range<usize>> {
        timestamps_from_probs(&self.speech_probs(samples), samples.len(), opts)
    }

    /// The model on the rows in `s.rows` (`[rows][576]`), carrying the LSTM state.
    fn run_block(&self, s: &mut Scratch, h: &mut [f32], c: &mut [f32], probs: &mut Vec<f32>) {
        let rows = s.rows.len() / ROW;
        // The frames the STFT convolution keeps, from each row padded by reflection.
        s.frames.clear();
        for row in s.rows.chunks_exact(ROW) {
            for frame in 1..=N_FRAMES {
                let first = frame * HOP - STFT_PAD;
                s.frames
                    .extend_from_slice(&row[first..ROW.min(first + N_FFT)]);
                let past = (ROW..first + N_FFT).map(|i| row[reflect(i as isize, ROW)]);
                s.frames.extend(past);
            }
        }
        s.spectrum.clear();
        s.spectrum.resize(rows * N_FRAMES * 2 * N_FREQ, 0.0);
        gemm(
            &s.frames,
            &self.basis,
            &self.zero_bias,
            N_FFT,
            &mut s.spectrum,
        );
        s.act.clear();
        for bins in s.spectrum.chunks_exact(2 * N_FREQ) {
            let (re, im) = bins.split_at(N_FREQ);
            s.act
                .extend(re.iter().zip(im).map(|(r, i)| (r * r + i * i).sqrt()));
        }
        let mut len = N_FRAMES;
        for conv in &self.convs {
            conv.forward(&s.act, len, &mut s.col, &mut s.next);
            std::mem::swap(&mut s.act, &mut s.next);
            len = conv.out_len(len);
        }
        // `s.act` is now [rows][HIDDEN]: the LSTM's inputs, projected for all rows at once.
        s.xproj.clear();
        s.xproj.resize(rows * 4 * HIDDEN, 0.0);
        gemm(&s.act, &self.lstm_w, &self.lstm_b, HIDDEN, &mut s.xproj);
        s.gates.resize(4 * HIDDEN, 0.0);
        s.hidden.clear();
        s.hidden.resize(rows * HIDDEN, 0.0);
        let steps = s
            .xproj
            .chunks_exact(4 * HIDDEN)
            .zip(s.hidden.chunks_exact_mut(HIDDEN));
        for (x, out) in steps {
            gemm(h, &self.lstm_r, x, HIDDEN, &mut s.gates);
            lstm_cell(&mut s.gates, c, h, out);
        }
        // The head: ReLU (in `lstm_cell`), the 1×1 convolution and the sigmoid.
        s.logits.clear();
        s.logits.resize(rows, 0.0);
        gemm(&s.hidden, &self.out_w, &[self.out_b], HIDDEN, &mut s.logits);
        probs.extend(s.logits.iter().map(|&z| sigmoid(z)));
    }
}

/// Row `i` of the model's input: the 64 samples before window `i` (zeros for the first)
/// and the window, zero past the end of `samples`.
fn fill_row(samples: &[f32], i: usize, row: &mut [f32]) {
    let start = i * WINDOW; // where the window starts; the row starts CONTEXT earlier
    let lo = start.saturating_sub(CONTEXT);
    let hi = (start + WINDOW).min(samples.len());
    row.fill(0.0);
    if lo < hi {
        let at = lo + CONTEXT - start;
        row[at..at + hi - lo].copy_from_slice(&samples[lo..hi]);
    }
}

/// Index of position `i` of a signal of length `len` padded by reflection (without
/// repeating the edge sample), as ONNX `Pad` mode `reflect` and numpy; `|pad| < len`.
fn reflect(i: isize, len: usize) -> usize {
    let last = len as isize - 1;
    let i = i.abs();
    (if i > last { 2 * last - i } else { i }) as usize
}

/// `e^x` without a library call, so that loops over it vectorise: Cephes' `expf` (range
/// reduction by ln 2, a degree-6 polynomial, the power of two put in the exponent bits),
/// within about 2 ulp. Inputs are clamped to where the result is a normal float.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer, branch-free.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// One LSTM step after the products: `gates` (`i, o, f, c`, pre-activation) update the
/// cell `c` and the output `h`; `out` gets ReLU(`h`) for the head.
fn lstm_cell(gates: &mut [f32], c: &mut [f32], h: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { lstm_cell_avx2_fma(gates, c, h, out) };
        return;
    }
    lstm_cell_with(gates, c, h, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lstm_cell_avx2_fma(gates: &mut [f32], c: &mut [f32], h: &mut [f32], out: &mut [f32]) {
    lstm_cell_with(gates, c, h, out);
}

#[inline(always)]
fn lstm_cell_with(gates: &mut [f32], c: &mut [f32], h: &mut [f32], out: &mut [f32]) {
    let (ifo, g) = gates.split_at_mut(3 * HIDDEN);
    for v in ifo.iter_mut() {
        *v = sigmoid(*v);
    }
    for v in g.iter_mut() {
        *v = tanh(*v);
    }
    let (i, rest) = ifo.split_at(HIDDEN);
    let (o, f) = rest.split_at(HIDDEN);
    let gates = i.iter().zip(o).zip(f).zip(&*g);
    let state = c.iter_mut().zip(h.iter_mut()).zip(out.iter_mut());
    for (((c, h), out), (((i, o), f), g)) in state.zip(gates) {
        *c = f * *c + i * g;
        *h = o * tanh(*c);
        *out = h.max(0.0);
    }
}

/// Whether the CPU has AVX2 and FMA, for which [`gemm`] and [`lstm_cell`] have builds
/// of the same code (their sums round slightly differently, as onnxruntime's own
/// kernels do between machines).
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[i·m + j] = bias[j] + x_i · w_j` for the rows `x_i` of `x` (`[n][k]`) and `w_j`
/// of `w` (`[m][k]`), `m = bias.len()`: every product of the model.
fn gemm(x: &[f32], w: &[f32], bias: &[f32], k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { gemm_avx2_fma(x, w, bias, k, out) };
        return;
    }
    gemm_with::<false, 4>(x, w, bias, k, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gemm_avx2_fma(x: &[f32], w: &[f32], bias: &[f32], k: usize, out: &mut [f32]) {
    gemm_with::<true, 8>(x, w, bias, k, out);
}

/// [`gemm`] with sums in `L` lanes, fused if `FMA`. By tiles of 4 rows of `x` × 2 rows
/// of `w`, so that each vector loaded serves two or four dot products; a single row of
/// `x` (the LSTM step) takes 4 rows of `w` at a time.
#[inline(always)]
fn gemm_with<const FMA: bool, const L: usize>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let m = bias.len();
    let mut x_groups = x.chunks_exact(4 * k);
    let mut out_groups = out.chunks_exact_mut(4 * m);
    for (xg, og) in (&mut x_groups).zip(&mut out_groups) {
        let xr = split::<4>(xg, k);
        let mut w_pairs = w.chunks_exact(2 * k);
        let mut j = 0;
        for wp in &mut w_pairs {
            let [w0, w1] = split::<2>(wp, k);
            let t = dot_4x2::<FMA, L>(xr, w0, w1);
            for (r, [v0, v1]) in t.into_iter().enumerate() {
                og[r * m + j] = bias[j] + v0;
                og[r * m + j + 1] = bias[j + 1] + v1;
            }
            j += 2;
        }
        for wj in w_pairs.remainder().chunks_exact(k) {
            for (r, v) in dot_1x4::<FMA, L>(wj, xr).into_iter().enumerate() {
                og[r * m + j] = bias[j] + v;
            }
            j += 1;
        }
    }
    let rest = x_groups.remainder().chunks_exact(k);
    for (xi, oi) in rest.zip(out_groups.into_remainder().chunks_exact_mut(m)) {
        let mut w_groups = w.chunks_exact(4 * k);
        let mut j = 0;
        for wg in &mut w_groups {
            for (c, v) in dot_1x4::<FMA, L>(xi, split::<4>(wg, k))
                .into_iter()
                .enumerate()
            {
                oi[j + c] = bias[j + c] + v;
            }
            j += 4;
        }
        for wj in w_groups.remainder().chunks_exact(k) {
            oi[j] = bias[j] + dot_1x4::<FMA, L>(xi, [wj; 4])[0];
            j += 1;
        }
    }
}

/// `v` (`[N][k]`) as its `N` rows.
#[inline(always)]
fn split<const N: usize>(v: &[f32], k: usize) -> [&[f32]; N] {
    let mut rows = [v; N];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = &v[i * k..(i + 1) * k];
    }
    rows
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The sum of `L` lanes, then the elements of `a` and `b` from `from` on.
#[inline(always)]
fn finish<const FMA: bool, const L: usize>(
    lanes: &[f32; L],
    a: &[f32],
    b: &[f32],
    from: usize,
) -> f32 {
    let mut sum = 0.0;
    for v in lanes {
        sum += v;
    }
    for (x, y) in a[from..].iter().zip(&b[from..]) {
        sum = madd::<FMA>(*x, *y, sum);
    }
    sum
}

/// `a · b_r` for four rows `b_r` of `a`'s length, in `L` independent lanes each.
// Indexed lanes, one independent sum each: the form the compiler vectorises.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot_1x4<const FMA: bool, const L: usize>(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let (a_body, _) = a.as_chunks::<L>();
    let (b0, _) = b[0].as_chunks::<L>();
    let (b1, _) = b[1].as_chunks::<L>();
    let (b2, _) = b[2].as_chunks::<L>();
    let (b3, _) = b[3].as_chunks::<L>();
    let mut acc = [[0.0f32; L]; 4];
    for ((((av, v0), v1), v2), v3) in a_body.iter().zip(b0).zip(b1).zip(b2).zip(b3) {
        for l in 0..L {
            acc[0][l] = madd::<FMA>(av[l], v0[l], acc[0][l]);
            acc[1][l] = madd::<FMA>(av[l], v1[l], acc[1][l]);
            acc[2][l] = madd::<FMA>(av[l], v2[l], acc[2][l]);
            acc[3][l] = madd::<FMA>(av[l], v3[l], acc[3][l]);
        }
    }
    let from = a_body.len() * L;
    [
        finish::<FMA, L>(&acc[0], a, b[0], from),
        finish::<FMA, L>(&acc[1], a, b[1], from),
        finish::<FMA, L>(&acc[2], a, b[2], from),
        finish::<FMA, L>(&acc[3], a, b[3], from),
    ]
}

/// `x_r · w0` and `x_r · w1` for four rows `x_r`, all of one length.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot_4x2<const FMA: bool, const L: usize>(
    x: [&[f32]; 4],
    w0: &[f32],
    w1: &[f32],
) -> [[f32; 2]; 4] {
    let (x0, _) = x[0].as_chunks::<L>();
    let (x1, _) = x[1].as_chunks::<L>();
    let (x2, _) = x[2].as_chunks::<L>();
    let (x3, _) = x[3].as_chunks::<L>();
    let (u0, _) = w0.as_chunks::<L>();
    let (u1, _) = w1.as_chunks::<L>();
    let mut acc = [[0.0f32; L]; 8];
    for (((((v0, v1), v2), v3), a), b) in x0.iter().zip(x1).zip(x2).zip(x3).zip(u0).zip(u1) {
        for l in 0..L {
            acc[0][l] = madd::<FMA>(v0[l], a[l], acc[0][l]);
            acc[1][l] = madd::<FMA>(v0[l], b[l], acc[1][l]);
            acc[2][l] = madd::<FMA>(v1[l], a[l], acc[2][l]);
            acc[3][l] = madd::<FMA>(v1[l], b[l], acc[3][l]);
            acc[4][l] = madd::<FMA>(v2[l], a[l], acc[4][l]);
            acc[5][l] = madd::<FMA>(v2[l], b[l], acc[5][l]);
            acc[6][l] = madd::<FMA>(v3[l], a[l], acc[6][l]);
            acc[7][l] = madd::<FMA>(v3[l], b[l], acc[7][l]);
        }
    }
    let from = x0.len() * L;
    let mut out = [[0.0; 2]; 4];
    for (r, o) in out.iter_mut().enumerate() {
        *o = [
            finish::<FMA, L>(&acc[2 * r], x[r], w0, from),
            finish::<FMA, L>(&acc[2 * r + 1], x[r], w1, from),
        ];
    }
    out
}

/// faster-whisper's `get_speech_timestamps` on the window probabilities of a recording
/// of `n_samples` 16 kHz samples: speech chunks in samples, padded and merged.
///
/// A line-by-line port (faster_whisper/vad.py:45-183), keeping Python's arithmetic:
/// sample positions are integers, the limits derived from the options are floats, and
/// probabilities are compared with the thresholds in `f32` (numpy ≥ 2 compares a
/// float32 with a Python float in float32).
pub fn timestamps_from_probs(
    probs: &[f32],
    n_samples: usize,
    opts: &VadOptions,
) -> Vec<Range<usize>> {
    let window = WINDOW as i64;
    let sr = SAMPLE_RATE as f64;
    let threshold = opts.threshold;
    let neg_threshold = opts
        .neg_threshold
        .unwrap_or_else(|| (python_float(threshold) - 0.15).max(0.01) as f32);
    let min_speech = sr * f64::from(opts.min_speech_duration_ms) / 1000.0;
    let pad = sr * f64::from(opts.speech_pad_ms) / 1000.0;
    let max_speech = sr * python_float(opts.max_speech_duration_s) - window as f64 - 2.0 * pad;
    let min_silence = sr * f64::from(opts.min_silence_duration_ms) / 1000.0;
    let min_silence_at_max_speech = sr * 98.0 / 1000.0;
    let len = n_samples as i64;

    let mut speeches: Vec<(i64, i64)> = Vec::new();
    // The start of the current speech, while triggered (`current_speech["start"]`).
    let mut current: Option<i64> = None;
    let (mut temp_end, mut prev_end, mut next_start) = (0i64, 0i64, 0i64);
    for (i, &p) in probs.iter().enumerate() {
        let at = window * i as i64;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = at;
            }
        }
        let Some(start) = current else {
            if p >= threshold {
                current = Some(at);
            }
            continue;
        };
        if (at - start) as f64 > max_speech {
            if prev_end != 0 {
                speeches.push((start, prev_end));
                // Silence was reached (< neg_threshold) and speech has not resumed.
                current = (next_start >= prev_end).then_some(next_start);
                prev_end = 0;
                next_start = 0;
                temp_end = 0;
            } else {
                speeches.push((start, at));
                current = None;
                prev_end = 0;
                next_start = 0;
                temp_end = 0;
                continue;
            }
        }
        if let Some(start) = current.filter(|_| p < neg_threshold) {
            if temp_end == 0 {
                temp_end = at;
            }
            // Not cut at a very short silence.
            if (at - temp_end) as f64 > min_silence_at_max_speech {
                prev_end = temp_end;
            }
            if ((at - temp_end) as f64) < min_silence {
                continue;
            }
            if (temp_end - start) as f64 > min_speech {
                speeches.push((start, temp_end));
            }
            current = None;
            prev_end = 0;
            next_start = 0;
            temp_end = 0;
        }
    }
    if let Some(start) = current.filter(|&s| (len - s) as f64 > min_speech) {
        speeches.push((start, len));
    }

    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - pad).max(0.0) as i64;
        }
        if i + 1 < n {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if (silence as f64) < 2.0 * pad {
                let half = silence.div_euclid(2);
                speeches[i].1 += half;
                speeches[i + 1].0 = (speeches[i + 1].0 - half).max(0);
            } else {
                speeches[i].1 = (speeches[i].1 as f64 + pad).min(len as f64) as i64;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - pad).max(0.0) as i64;
            }
        } else {
            speeches[i].1 = (speeches[i].1 as f64 + pad).min(len as f64) as i64;
        }
    }
    speeches
        .into_iter()
        .map(|(s, e)| s.max(0) as usize..e.max(0) as usize)
        .collect()
}

/// The `f64` a Python user meant by an option given here as `f32` (0.6, not
/// 0.60000002384): the shortest decimal that reads back as the same `f32`.
fn python_float(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// The speech chunks of `samples` one after the other, as faster-whisper's sequential
/// `transcribe` decodes them (`collect_chunks` without a maximum duration, then
/// concatenated). No chunks give an empty signal. Ranges past the end are cut there, as
/// numpy slicing does.
pub fn collect_chunks(samples: &[f32], chunks: &[Range<usize>]) -> Vec<f32> {
    let clamp = |r: &Range<usize>| r.start.min(samples.len())..r.end.min(samples.len());
    let total = chunks.iter().map(|r| clamp(r).len()).sum();
    let mut out = Vec::with_capacity(total);
    for r in chunks {
        out.extend_from_slice(&samples[clamp(r)]);
    }
    out
}

/// faster-whisper's `SpeechTimestampsMap`: from a time in the speech-only signal made
/// by [`collect_chunks`] to the time in the recording.
#[derive(Debug, Clone)]
pub struct SpeechTimestampsMap {
    sample_rate: usize,
    /// Where each chunk ends in the speech-only signal, in samples.
    chunk_end_sample: Vec<i64>,
    /// Silence cut out before each chunk, in seconds.
    total_silence_before: Vec<f64>,
}

impl SpeechTimestampsMap {
    pub fn new(chunks: &[Range<usize>], sample_rate: usize) -> Self {
        let mut previous_end = 0i64;
        let mut silent = 0i64;
        let mut chunk_end_sample = Vec::with_capacity(chunks.len());
        let mut total_silence_before = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            silent += chunk.start as i64 - previous_end;
            previous_end = chunk.end as i64;
            chunk_end_sample.push(chunk.end as i64 - silent);
            total_silence_before.push(silent as f64 / sample_rate as f64);
        }
        Self {
            sample_rate,
            chunk_end_sample,
            total_silence_before,
        }
    }

    /// `get_original_time`: the time `t` (seconds in the speech-only signal) of chunk
    /// `chunk_index` (by default the chunk holding `t`; with `is_end`, a time exactly at
    /// a chunk's end belongs to that chunk) in the recording, rounded to 10 ms as
    /// Python's `round(x, 2)`. Without chunks, `t` itself.
    pub fn original_time(&self, t: f64, chunk_index: Option<usize>, is_end: bool) -> f64 {
        let k = chunk_index.unwrap_or_else(|| self.chunk_index(t, is_end));
        match self.total_silence_before.get(k) {
            Some(silence) => round2(silence + t),
            None => t,
        }
    }

    /// `get_chunk_index`: the chunk holding time `t` of the speech-only signal (the last
    /// one for times past the end).
    pub fn chunk_index(&self, t: f64, is_end: bool) -> usize {
        let sample = (t * self.sample_rate as f64) as i64;
        if is_end {
            if let Some(k) = self.chunk_end_sample.iter().position(|&e| e == sample) {
                return k;
            }
        }
        let after = self.chunk_end_sample.partition_point(|&e| e <= sample);
        after.min(self.chunk_end_sample.len().saturating_sub(1))
    }
}

/// Python's `round(x, 2)`: the exact binary value rounded to two decimals, ties to even,
/// which is what Rust's `{:.2}` formatting does.
fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

/// faster-whisper's `restore_speech_timestamps`: segments (and their words) of the
/// speech-only signal moved to the recording's timeline. A word's start and end are
/// mapped with the chunk of its middle, so a word never straddles a cut; a segment with
/// words then spans its first to its last word.
pub fn restore_timestamps(segments: &mut [shared::domain::Segment], map: &SpeechTimestampsMap) {
    for segment in segments {
        match segment.words.as_mut().filter(|w| !w.is_empty()) {
            Some(words) => {
                for word in words.iter_mut() {
                    let k = map.chunk_index((word.start + word.end) / 2.0, false);
                    word.start = map.original_time(word.start, Some(k), false);
                    word.end = map.original_time(word.end, Some(k), false);
                }
                segment.start = words[0].start;
                segment.end = words[words.len() - 1].end;
            }
            None => {
                segment.start = map.original_time(segment.start, None, false);
                segment.end = map.original_time(segment.end, None, true);
            }
        }
    }
}

/// Just enough of the ONNX protobuf format to read this model: nodes with their
/// attributes, initializers and `Constant` values as `f32`/`i64` tensors, and the graph's
/// outputs. Unknown fields are skipped, as protobuf readers do.
mod onnx {
    use std::collections::HashMap;

    pub(super) struct Tensor {
        pub dims: Vec<i64>,
        pub data: Data,
    }

    #[derive(Debug, PartialEq)]
    pub(super) enum Data {
        F32(Vec<f32>),
        I64(Vec<i64>),
        Other(i64),
    }

    pub(super) enum Attr {
        Int(i64),
        Ints(Vec<i64>),
        Str(Vec<u8>),
        Other,
    }

    pub(super) struct Node {
        pub op: String,
        pub inputs: Vec<String>,
        pub outputs: Vec<String>,
        pub attrs: Vec<(String, Attr)>,
    }

    impl Node {
        /// Input `i`, or "" if absent.
        pub fn input(&self, i: usize) -> &str {
            self.inputs.get(i).map_or("", String::as_str)
        }

        pub fn output(&self, i: usize) -> &str {
            self.outputs.get(i).map_or("", String::as_str)
        }

        pub fn attr(&self, name: &str) -> Option<&Attr> {
            self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
        }
    }

    pub(super) struct Graph {
        pub nodes: Vec<Node>,
        pub consts: HashMap<String, Tensor>,
        pub outputs: Vec<String>,
    }

    /// One field of a protobuf message.
    enum Wire<'a> {
        Varint(u64),
        Fixed64,
        Bytes(&'a [u8]),
        Fixed32(u32),
    }

    pub(super) fn varint(buf: &mut &[u8]) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if buf.len() < n {
            return Err("truncated field".into());
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }

    /// The next field of a message: its number and value.
    fn field<'a>(buf: &mut &'a [u8]) -> Result<(u64, Wire<'a>), String> {
        let key = varint(buf)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(buf)?),
            1 => {
                take(buf, 8)?;
                Wire::Fixed64
            }
            2 => {
                let n = usize::try_from(varint(buf)?).map_err(|e| e.to_string())?;
                Wire::Bytes(take(buf, n)?)
            }
            5 => {
                let b = take(buf, 4)?;
                Wire::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        Ok((key >> 3, value))
    }

    /// The fields of a message, in order; nothing more after an error.
    fn fields(mut buf: &[u8]) -> impl Iterator<Item = Result<(u64, Wire<'_>), String>> {
        std::iter::from_fn(move || {
            if buf.is_empty() {
                return None;
            }
            let next = field(&mut buf);
            if next.is_err() {
                buf = &[];
            }
            Some(next)
        })
    }

    fn string(b: &[u8]) -> Result<String, String> {
        String::from_utf8(b.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }

    /// A repeated int64 field, packed or not.
    fn push_ints(out: &mut Vec<i64>, w: Wire<'_>) -> Result<(), String> {
        match w {
            Wire::Varint(v) => out.push(v as i64),
            Wire::Bytes(mut b) => {
                while !b.is_empty() {
                    out.push(varint(&mut b)? as i64);
                }
            }
            _ => return Err("bad repeated int64 field".into()),
        }
        Ok(())
    }

    /// A repeated float field, packed or not.
    fn push_floats(out: &mut Vec<f32>, w: Wire<'_>) -> Result<(), String> {
        match w {
            Wire::Fixed32(v) => out.push(f32::from_bits(v)),
            Wire::Bytes(b) if b.len() % 4 == 0 => out.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            _ => return Err("bad repeated float field".into()),
        }
        Ok(())
    }

    const FLOAT: i64 = 1;
    const INT64: i64 = 7;

    /// A `TensorProto`, with its name.
    pub(super) fn tensor(buf: &[u8]) -> Result<(String, Tensor), String> {
        let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 0i64);
        let (mut floats, mut ints, mut raw) = (Vec::new(), Vec::new(), None);
        for field in fields(buf) {
            match field? {
                (1, w) => push_ints(&mut dims, w)?,
                (2, Wire::Varint(v)) => data_type = v as i64,
                (4, w) => push_floats(&mut floats, w)?,
                (7, w) => push_ints(&mut ints, w)?,
                (8, Wire::Bytes(b)) => name = string(b)?,
                (9, Wire::Bytes(b)) => raw = Some(b),
                (14, Wire::Varint(1)) => {
                    return Err(format!("tensor '{name}' is stored outside the file"))
                }
                _ => {}
            }
        }
        let data = match (data_type, raw) {
            (FLOAT, Some(b)) if b.len() % 4 == 0 => Data::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            (INT64, Some(b)) if b.len() % 8 == 0 => Data::I64(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            (FLOAT | INT64, Some(_)) => {
                return Err(format!("tensor '{name}' has a partial element"))
            }
            (FLOAT, None) => Data::F32(floats),
            (INT64, None) => Data::I64(ints),
            (other, _) => Data::Other(other),
        };
        let count = match &data {
            Data::F32(v) => Some(v.len()),
            Data::I64(v) => Some(v.len()),
            Data::Other(_) => None,
        };
        let want = dims.iter().try_fold(1usize, |n, &d| {
            usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
        });
        if count.is_some() && count != want {
            return Err(format!(
                "tensor '{name}' has {count:?} elements for shape {dims:?}"
            ));
        }
        Ok((name, Tensor { dims, data }))
    }

    /// An `AttributeProto`, by its declared type (proto2 may omit default values).
    fn attribute(buf: &[u8]) -> Result<(String, Attr), String> {
        let (mut name, mut kind) = (String::new(), 0u64);
        let (mut int, mut ints, mut s) = (0i64, Vec::new(), Vec::new());
        for field in fields(buf) {
            match field? {
                (1, Wire::Bytes(b)) => name = string(b)?,
                (3, Wire::Varint(v)) => int = v as i64,
                (4, Wire::Bytes(b)) => s = b.to_vec(),
                (8, w) => push_ints(&mut ints, w)?,
                (20, Wire::Varint(v)) => kind = v,
                _ => {}
            }
        }
        let attr = match kind {
            2 => Attr::Int(int),
            3 => Attr::Str(s),
            7 => Attr::Ints(ints),
            _ => Attr::Other,
        };
        Ok((name, attr))
    }

    fn node(buf: &[u8]) -> Result<(Node, Option<Tensor>), String> {
        let mut node = Node {
            op: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            attrs: Vec::new(),
        };
        let mut value = None;
        for field in fields(buf) {
            match field? {
                (1, Wire::Bytes(b)) => node.inputs.push(string(b)?),
                (2, Wire::Bytes(b)) => node.outputs.push(string(b)?),
                (4, Wire::Bytes(b)) => node.op = string(b)?,
                (5, Wire::Bytes(b)) => {
                    // A Constant's tensor (field 5 of the attribute) is kept aside.
                    let (name, attr) = attribute(b)?;
                    if name == "value" {
                        for f in fields(b) {
                            if let (5, Wire::Bytes(t)) = f? {
                                value = Some(tensor(t)?.1);
                            }
                        }
                    }
                    node.attrs.push((name, attr));
                }
                (7, Wire::Bytes(b)) if !b.is_empty() && b != b"ai.onnx" => {
                    return Err(format!("operator domain '{}'", String::from_utf8_lossy(b)))
                }
                _ => {}
            }
        }
        Ok((node, value))
    }

    /// The graph of a serialized `ModelProto`.
    pub(super) fn parse_model(bytes: &[u8]) -> Result<Graph, String> {
        let mut graph = None;
        for field in fields(bytes) {
            if let (7, Wire::Bytes(b)) = field? {
                graph = Some(b);
            }
        }
        let graph = graph.ok_or("no graph (not an ONNX model)")?;
        let mut g = Graph {
            nodes: Vec::new(),
            consts: HashMap::new(),
            outputs: Vec::new(),
        };
        for field in fields(graph) {
            match field? {
                (1, Wire::Bytes(b)) => {
                    let (node, value) = node(b)?;
                    if node.op == "Constant" {
                        let value = value.ok_or("a Constant without a tensor value")?;
                        g.consts.insert(node.output(0).to_string(), value);
                    } else {
                        g.nodes.push(node);
                    }
                }
                (5, Wire::Bytes(b)) => {
                    let (name, t) = tensor(b)?;
                    g.consts.insert(name, t);
                }
                (12, Wire::Bytes(b)) => {
                    for f in fields(b) {
                        if let (1, Wire::Bytes(name)) = f? {
                            g.outputs.push(string(name)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(g)
    }

    impl Graph {
        /// The nodes that read `name`.
        pub fn consumers(&self, name: &str) -> Vec<&Node> {
            self.nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|i| i == name))
                .collect()
        }

        /// The one node that reads `name`, which must be an `op` taking it as its
        /// first input.
        pub fn one(&self, name: &str, op: &str) -> Result<&Node, String> {
            match self.consumers(name)[..] {
                [node] if node.op == op && node.input(0) == name => Ok(node),
                [node] => Err(format!("'{name}' feeds {}, expected {op}", node.op)),
                ref nodes => Err(format!(
                    "'{name}' feeds {} nodes, expected one {op}",
                    nodes.len()
                )),
            }
        }

        fn tensor(&self, name: &str) -> Result<&Tensor, String> {
            self.consts
                .get(name)
                .ok_or_else(|| format!("'{name}' is not a constant"))
        }

        pub fn const_ints(&self, name: &str) -> Result<&[i64], String> {
            match &self.tensor(name)?.data {
                Data::I64(v) => Ok(v),
                _ => Err(format!("'{name}' is not an int64 constant")),
            }
        }

        pub fn const_f32(&self, name: &str) -> Result<&[f32], String> {
            match &self.tensor(name)?.data {
                Data::F32(v) => Ok(v),
                Data::I64(_) => Err(format!("'{name}' is an int64 constant, expected float")),
                Data::Other(t) => Err(format!("'{name}' has data type {t}, expected float")),
            }
        }

        pub fn dims(&self, name: &str) -> Result<Vec<usize>, String> {
            self.tensor(name)?
                .dims
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("'{name}' has dimension {d}")))
                .collect()
        }

        /// Input `i` of `node`: a float constant of shape `dims`.
        pub fn weight(&self, node: &Node, i: usize, dims: &[usize]) -> Result<&[f32], String> {
            let name = node.input(i);
            let got = self.dims(name)?;
            if got != dims {
                return Err(format!("'{name}' has shape {got:?}, expected {dims:?}"));
            }
            self.const_f32(name)
        }

        pub fn expect_const_ints(&self, node: &Node, i: usize, want: &[i64]) -> Result<(), String> {
            let got = self.const_ints(node.input(i))?;
            if got != want {
                return Err(format!(
                    "{} input {i} is {got:?}, expected {want:?}",
                    node.op
                ));
            }
            Ok(())
        }

        /// Checks the ints attribute (or int: one element) `name` of `node`; absent, it
        /// is `default`, or an error without one.
        pub fn expect_ints(
            &self,
            node: &Node,
            name: &str,
            default: Option<&[i64]>,
            want: &[i64],
        ) -> Result<(), String> {
            let ok = match (node.attr(name), default) {
                (Some(Attr::Ints(v)), _) => v == want,
                (Some(Attr::Int(v)), _) => [*v] == want,
                (None, Some(d)) => d == want,
                _ => false,
            };
            if !ok {
                return Err(format!("{} attribute '{name}' is not {want:?}", node.op));
            }
            Ok(())
        }

        pub fn expect_str(
            &self,
            node: &Node,
            name: &str,
            default: Option<&str>,
            want: &str,
        ) -> Result<(), String> {
            let ok = match (node.attr(name), default) {
                (Some(Attr::Str(s)), _) => s == want.as_bytes(),
                (None, Some(d)) => d == want,
                _ => false,
            };
            if !ok {
                return Err(format!("{} attribute '{name}' is not '{want}'", node.op));
            }
            Ok(())
        }

        /// A 1-D `Conv`'s stride and (symmetric) padding; the other attributes must be
        /// the defaults and `kernel_shape`, if given, `[kernel]`.
        pub fn conv_attrs(&self, node: &Node, kernel: usize) -> Result<(usize, usize), String> {
            self.expect_ints(node, "dilations", Some(&[1]), &[1])?;
            self.expect_ints(node, "group", Some(&[1]), &[1])?;
            self.expect_ints(
                node,
                "kernel_shape",
                Some(&[kernel as i64]),
                &[kernel as i64],
            )?;
            if node.attr("auto_pad").is_some() {
                self.expect_str(node, "auto_pad", None, "NOTSET")?;
            }
            let ints = |name: &str, default: Vec<i64>| match node.attr(name) {
                Some(Attr::Ints(v)) => v.clone(),
                None => default,
                Some(_) => Vec::new(),
            };
            let bad = || format!("Conv '{}': unsupported strides or pads", node.output(0));
            let (strides, pads) = (ints("strides", vec![1]), ints("pads", vec![0, 0]));
            match (&strides[..], &pads[..]) {
                (&[s], &[p, q]) if s > 0 && p == q && p >= 0 => Ok((s as usize, p as usize)),
                _ => Err(bad()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{Segment, Word};

    fn naive_gemm(x: &[f32], w: &[f32], bias: &[f32], k: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for xi in x.chunks_exact(k) {
            for (wj, b) in w.chunks_exact(k).zip(bias) {
                out.push(b + xi.iter().zip(wj).map(|(a, c)| a * c).sum::<f32>());
            }
        }
        out
    }

    #[test]
    fn gemm_matches_the_naive_product_for_every_remainder() {
        // Rows of x past a multiple of 4, rows of w past a multiple of 4, k past the lanes.
        for (n, m, k) in [(1, 1, 1), (4, 4, 16), (7, 6, 37), (9, 13, 128), (1, 10, 19)] {
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let w: Vec<f32> = (0..m * k)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
                .collect();
            let bias: Vec<f32> = (0..m).map(|j| j as f32 * 0.5).collect();
            let want = naive_gemm(&x, &w, &bias, k);
            let mut out = vec![f32::NAN; n * m];
            gemm_with::<false, 4>(&x, &w, &bias, k, &mut out);
            let mut fused = vec![f32::NAN; n * m];
            gemm(&x, &w, &bias, k, &mut fused);
            for ((a, f), b) in out.iter().zip(&fused).zip(want) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{n}×{m}×{k}: {a} vs {b}"
                );
                assert!(
                    (f - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{n}×{m}×{k}: {f} vs {b}"
                );
            }
        }
    }

    #[test]
    fn activations_match_the_library_functions() {
        for i in -2000..=2000 {
            let x = i as f32 / 50.0; // -40..40
            let (e, want) = (exp(x / 4.0), (x / 4.0).exp());
            assert!(
                (e - want).abs() <= 3e-7 * want,
                "exp({}) = {e}, not {want}",
                x / 4.0
            );
            assert!(
                (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() <= 2e-7,
                "sigmoid({x})"
            );
            assert!(
                (tanh(x) - x.tanh()).abs() <= 3e-7,
                "tanh({x}) = {}",
                tanh(x)
            );
        }
        assert!(sigmoid(-200.0) < 1e-37 && sigmoid(200.0) == 1.0);
        assert!(tanh(-200.0) == -1.0 && tanh(200.0) == 1.0);
    }

    #[test]
    fn rows_hold_the_previous_windows_tail_and_reflect_as_numpy() {
        let samples: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        let mut row = vec![f32::NAN; ROW];
        fill_row(&samples, 0, &mut row);
        assert!(row[..CONTEXT].iter().all(|&v| v == 0.0));
        assert_eq!(row[CONTEXT], 1.0);
        fill_row(&samples, 1, &mut row);
        assert_eq!(row[0], 449.0); // sample 448, the first of window 0's last 64
        assert_eq!(row[CONTEXT + 487], 1000.0);
        assert!(row[CONTEXT + 488..].iter().all(|&v| v == 0.0));
        // numpy.pad([0, 1, 2, 3], 2, "reflect") == [2, 1, 0, 1, 2, 3, 2, 1]
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [2, 1, 0, 1, 2, 3, 2, 1]);
    }

    /// `timestamps_from_probs` as (start, end) pairs.
    fn ts(probs: &[f32], n_samples: usize, opts: &VadOptions) -> Vec<(usize, usize)> {
        timestamps_from_probs(probs, n_samples, opts)
            .into_iter()
            .map(|r| (r.start, r.end))
            .collect()
    }

    /// Probabilities: `runs` of (value, windows).
    fn probs(runs: &[(f32, usize)]) -> Vec<f32> {
        runs.iter()
            .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
            .collect()
    }

    fn opts(min_silence_ms: u32, pad_ms: u32) -> VadOptions {
        VadOptions {
            min_silence_duration_ms: min_silence_ms,
            speech_pad_ms: pad_ms,
            ..VadOptions::default()
        }
    }

    #[test]
    fn a_silence_shorter_than_min_silence_does_not_end_speech() {
        // Speech in windows 2..10 and 14..20; silence 10..14 is 4 windows = 2048 samples.
        let p = probs(&[(0.1, 2), (0.9, 8), (0.1, 4), (0.9, 6), (0.1, 10)]);
        let len = p.len() * WINDOW;
        // 100 ms = 1600 samples: the silence at window 10 has lasted 1536 samples at
        // window 13 (not yet ended), 2048 ≥ 1600 only at window 14, which is speech.
        // The speech ends at window 20 when 1600 samples have passed: window 24.
        assert_eq!(ts(&p, len, &opts(100, 0)), [(1024, 10240)]);
        // 50 ms = 800 samples: ended at window 12 (1024 ≥ 800), at temp_end = window 10.
        assert_eq!(ts(&p, len, &opts(50, 0)), [(1024, 5120), (7168, 10240)]);
    }

    #[test]
    fn probabilities_between_the_thresholds_keep_speech_going() {
        // 0.4 is below 0.5 (does not start speech) but above 0.35 (does not end it).
        let p = probs(&[(0.4, 3), (0.6, 2), (0.4, 10), (0.2, 5)]);
        let len = p.len() * WINDOW;
        assert_eq!(ts(&p, len, &opts(50, 0)), [(1536, 7680)]);
        // With neg_threshold 0.45 the 0.4 windows end it: silence from window 5.
        let o = VadOptions {
            neg_threshold: Some(0.45),
            ..opts(50, 0)
        };
        assert_eq!(ts(&p, len, &o), [(1536, 2560)]);
    }

    #[test]
    fn speech_open_at_the_end_runs_to_the_last_sample_and_short_speech_is_dropped() {
        let p = probs(&[(0.1, 4), (0.9, 3)]);
        assert_eq!(ts(&p, 3500, &opts(100, 0)), [(2048, 3500)]);
        // 3 windows (1536 samples) of speech; 100 ms = 1600 is the minimum.
        let p = probs(&[(0.1, 4), (0.9, 3), (0.1, 10)]);
        let o = VadOptions {
            min_speech_duration_ms: 100,
            ..opts(100, 0)
        };
        assert!(ts(&p, p.len() * WINDOW, &o).is_empty());
        assert!(ts(&[], 0, &VadOptions::default()).is_empty());
    }

    #[test]
    fn long_speech_is_split_at_its_last_long_silence_or_else_at_the_limit() {
        // max 1 s: max_speech = 16000 − 512 = 15488 samples, passed at 31 windows.
        let o = VadOptions {
            max_speech_duration_s: 1.0,
            ..opts(2000, 0)
        };
        // Speech from window 0; a 5-window pause (below neg) at 10..15 (> 98 ms after
        // 4 windows: prev_end = 5120), speech again from 15 (next_start = 7680).
        let p = probs(&[(0.9, 10), (0.1, 5), (0.9, 30)]);
        let len = p.len() * WINDOW;
        // At window 31 (15872 > 15488): [0, 5120] is emitted and speech goes on from
        // 7680, until the end (45 windows).
        assert_eq!(ts(&p, len, &o), [(0, 5120), (7680, len)]);
        // Without any pause: cut at the limit itself, then speech restarts on the next
        // speech window.
        let p = probs(&[(0.9, 40)]);
        let len = p.len() * WINDOW;
        assert_eq!(ts(&p, len, &o), [(0, 31 * WINDOW), (32 * WINDOW, len)]);
    }

    #[test]
    fn padding_splits_short_gaps_and_pads_long_ones_within_the_recording() {
        // Speech in windows 4..8, 11..15 and 31..35; min silence 50 ms = 800 samples
        // (ended on the third silent window); pad 100 ms = 1600 samples.
        let p = probs(&[
            (0.1, 4),
            (0.9, 4),
            (0.1, 3),
            (0.9, 4),
            (0.1, 16),
            (0.9, 4),
            (0.1, 3),
        ]);
        let len = p.len() * WINDOW; // 38 windows = 19456
        let got = ts(&p, len, &opts(50, 100));
        // Before padding: [2048, 4096] [5632, 7680] [15872, 17920]. The first gap (1536)
        // is under 2·pad and split in two; the second (8192) gets the pad on both sides;
        // the first start and last end get it too, the end cut at the recording's end.
        assert_eq!(got, [(448, 4864), (4864, 9280), (14272, len)]);
        let p = probs(&[(0.9, 4), (0.1, 3)]);
        assert_eq!(ts(&p, 3500, &opts(50, 400)), [(0, 3500)]);
    }

    #[test]
    fn options_round_trip_through_json_with_infinity_as_null() {
        let o = VadOptions::default();
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains("\"max_speech_duration_s\":null"), "{json}");
        assert_eq!(serde_json::from_str::<VadOptions>(&json).unwrap(), o);
        let short: VadOptions = serde_json::from_str(r#"{"max_speech_duration_s":30}"#).unwrap();
        assert_eq!(short.max_speech_duration_s, 30.0);
        assert_eq!(short.speech_pad_ms, 400);
    }

    fn map() -> SpeechTimestampsMap {
        // 1 s of silence, 1 s of speech, 1 s of silence, 1 s of speech.
        SpeechTimestampsMap::new(&[16_000..32_000, 48_000..64_000], 16_000)
    }

    #[test]
    fn times_map_back_past_the_silence_cut_before_their_chunk() {
        let m = map();
        assert_eq!(m.original_time(0.5, None, false), 1.5);
        // The boundary belongs to the next chunk, unless it is an end.
        assert_eq!(m.chunk_index(1.0, false), 1);
        assert_eq!(m.original_time(1.0, None, false), 3.0);
        assert_eq!(m.chunk_index(1.0, true), 0);
        assert_eq!(m.original_time(1.0, None, true), 2.0);
        // Past the end: the last chunk. Rounded to 10 ms, ties to even.
        assert_eq!(m.original_time(2.5, None, false), 4.5);
        assert_eq!(m.original_time(0.123456, None, false), 1.12);
        assert_eq!(m.original_time(0.125, Some(1), false), 2.12);
        assert_eq!(
            SpeechTimestampsMap::new(&[], 16_000).original_time(0.7, None, true),
            0.7
        );
    }

    fn segment(start: f64, end: f64, words: Option<Vec<(f64, f64)>>) -> Segment {
        Segment {
            start,
            end,
            text: String::new(),
            avg_logprob: 0.0,
            no_speech_prob: 0.0,
            words: words.map(|w| {
                w.into_iter()
                    .map(|(start, end)| Word {
                        word: "w".into(),
                        start,
                        end,
                        probability: 1.0,
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn restored_words_keep_the_chunk_of_their_middle() {
        let mut segments = vec![
            segment(0.2, 1.0, None),
            // Word 2 starts in chunk 0 but its middle (1.05) is in chunk 1.
            segment(0.2, 1.4, Some(vec![(0.2, 0.8), (0.9, 1.2), (1.3, 1.4)])),
            segment(0.1, 0.3, Some(vec![])),
        ];
        restore_timestamps(&mut segments, &map());
        assert_eq!((segments[0].start, segments[0].end), (1.2, 2.0));
        let words: Vec<(f64, f64)> = segments[1]
            .words
            .iter()
            .flatten()
            .map(|w| (w.start, w.end))
            .collect();
        assert_eq!(words, [(1.2, 1.8), (2.9, 3.2), (3.3, 3.4)]);
        assert_eq!((segments[1].start, segments[1].end), (1.2, 3.4));
        // An empty word list is "no words", as in Python.
        assert_eq!((segments[2].start, segments[2].end), (1.1, 1.3));
    }

    #[test]
    fn chunks_are_concatenated_and_cut_at_the_end() {
        let samples: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let got = collect_chunks(&samples, &[1..3, 5..6, 8..20]);
        assert_eq!(got, [1.0, 2.0, 5.0, 8.0, 9.0]);
        assert!(collect_chunks(&samples, &[]).is_empty());
    }

    #[test]
    fn protobuf_tensors_read_packed_and_unpacked_fields() {
        let mut two_bytes: &[u8] = &[0xac, 0x02, 0xff];
        assert_eq!(onnx::varint(&mut two_bytes), Ok(300));
        assert_eq!(two_bytes, [0xff]);
        // dims 2 (unpacked varint) then [1] (packed); data_type FLOAT; name "t";
        // float_data [0.5, -1] packed.
        let mut msg = vec![0x08, 0x02, 0x0a, 0x01, 0x01, 0x10, 0x01, 0x42, 0x01, b't'];
        msg.extend([0x22, 0x08]);
        msg.extend(0.5f32.to_le_bytes());
        msg.extend((-1.0f32).to_le_bytes());
        let (name, t) = onnx::tensor(&msg).unwrap();
        assert_eq!((name.as_str(), t.dims.as_slice()), ("t", &[2, 1][..]));
        assert_eq!(t.data, onnx::Data::F32(vec![0.5, -1.0]));
        // The same with three elements declared: refused.
        msg[1] = 0x03;
        assert!(onnx::tensor(&msg).is_err());
        // Truncated input is an error, not a panic.
        assert!(onnx::parse_model(&[0x3a, 0x10, 0x0a]).is_err());
        assert!(onnx::parse_model(b"not a model at all").is_err());
    }

    #[test]
    fn a_file_that_is_not_the_model_is_vad_unavailable() {
        let dir = std::env::temp_dir().join(format!("voxq-vad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = SileroVad::load(&dir.join("absent.onnx")).err().unwrap();
        assert_eq!(missing.code(), "vad-unavailable");
        assert!(missing.to_string().contains("fetch-vad.sh"), "{missing}");
        let text = dir.join("text.onnx");
        std::fs::write(&text, "hello").unwrap();
        let bad = SileroVad::load(&text).err().unwrap();
        assert_eq!(bad.code(), "vad-unavailable");
        assert!(matches!(bad, VadError::Model { .. }), "{bad:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_model_is_shareable_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<SileroVad>();
    }
}
