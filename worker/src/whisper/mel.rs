//! Whisper's log-mel front end, computed as faster-whisper's `FeatureExtractor` does:
//! n_fft 400, hop 160, periodic Hann window, centred reflect padding, Slaney mel
//! filters computed here for any number of bins, log10 with a 1e-10 floor, an 8-decade
//! dynamic range taken over the whole recording, then `(x + 4) / 4`.
//!
//! The dynamic-range clamp is global on purpose: faster-whisper computes it over the
//! whole file, not per 30-second window, and the model's output depends on it. So the
//! features are made in two passes: one over the whole recording for that maximum, then
//! each encoder window from the samples when it is needed. Memory follows the window, not
//! the recording, and every value is the one a whole-file computation gives.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

pub(crate) const SAMPLE_RATE: usize = 16_000;
pub(crate) const N_FFT: usize = 400;
pub(crate) const HOP: usize = 160;
/// Frames in one 30-second encoder window.
pub(crate) const WINDOW_FRAMES: usize = 3000;
const N_BINS: usize = N_FFT / 2 + 1;

/// One mel band: the FFT bins it covers and their weights.
struct Band {
    first_bin: usize,
    weights: Vec<f32>,
}

/// Computes log-mel spectrograms for one model's number of mel bins.
pub(crate) struct MelFrontEnd {
    n_mels: usize,
    bands: Vec<Band>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

/// One recording's log-mel spectrogram, computed window by window: only the dynamic-range
/// floor is kept for the whole recording, and each 30-second window is computed from the
/// samples when the decoder asks for it. Whole-file features would add half the PCM's
/// size again (80 × 4 bytes per 10 ms, against 4 bytes per 62.5 µs of samples).
pub(crate) struct LogMel<'a> {
    front: &'a MelFrontEnd,
    samples: &'a [f32],
    pub(crate) n_frames: usize,
    /// The whole recording's highest log10 energy minus 8 decades.
    floor: f32,
}

/// Per-frame buffers, allocated once per pass.
struct FrameScratch {
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft: Vec<Complex<f32>>,
    power: [f32; N_BINS],
}

impl MelFrontEnd {
    pub(crate) fn new(n_mels: usize) -> Self {
        let filters = slaney_mel_filters(SAMPLE_RATE as f64, N_FFT, n_mels);
        let bands = filters
            .iter()
            .map(|row| {
                let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w > 0.0).unwrap_or(0);
                Band {
                    first_bin: first,
                    weights: row[first..=last.max(first)]
                        .iter()
                        .map(|&w| w as f32)
                        .collect(),
                }
            })
            .collect();
        // np.hanning(N + 1)[:-1]: the periodic Hann window.
        let window = (0..N_FFT)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self {
            n_mels,
            bands,
            window,
            fft,
        }
    }

    pub(crate) fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Prepares the log-mel features of 16 kHz mono samples. Like faster-whisper, the
    /// signal is first padded with one hop of zeros and the last STFT frame is dropped, so
    /// the result has `len / 160 + 1` frames.
    ///
    /// This is one pass over the recording, for the dynamic-range floor (faster-whisper
    /// takes it over the whole file); nothing it keeps grows with the recording.
    pub(crate) fn prepare<'a>(&'a self, samples: &'a [f32]) -> LogMel<'a> {
        // 1 + (n + 2*pad - N_FFT) / HOP frames of the padded signal, minus the dropped one.
        let n_frames = (samples.len() + HOP) / HOP;
        let mut scratch = self.scratch();
        let mut energies = vec![0.0f32; self.n_mels];
        let mut max = f32::NEG_INFINITY;
        for t in 0..n_frames {
            self.frame_energies(samples, t, &mut scratch, &mut energies);
            for &e in &energies {
                max = max.max(e.max(1e-10).log10());
            }
        }
        LogMel {
            front: self,
            samples,
            n_frames,
            floor: max - 8.0,
        }
    }

    fn scratch(&self) -> FrameScratch {
        FrameScratch {
            frame: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            fft: self.fft.make_scratch_vec(),
            power: [0.0; N_BINS],
        }
    }

    /// Mel energies of STFT frame `t` of `samples` (centred and reflect-padded, after the
    /// extra hop of zeros), one per band into `out`.
    fn frame_energies(
        &self,
        samples: &[f32],
        t: usize,
        scratch: &mut FrameScratch,
        out: &mut [f32],
    ) {
        // The padded signal: the samples, then one hop of zeros.
        let n = samples.len() + HOP;
        let at = |i: usize| samples.get(i).copied().unwrap_or(0.0);
        let start = (t * HOP) as isize - (N_FFT / 2) as isize;
        for (i, slot) in scratch.frame.iter_mut().enumerate() {
            let idx = start + i as isize;
            let s = if idx >= 0 && (idx as usize) < n {
                at(idx as usize)
            } else {
                at(reflect(idx, n))
            };
            *slot = s * self.window[i];
        }
        // The planner was built for N_FFT and the buffers by the plan: this cannot fail.
        if self
            .fft
            .process_with_scratch(&mut scratch.frame, &mut scratch.spectrum, &mut scratch.fft)
            .is_err()
        {
            unreachable!("FFT buffers are sized by their own plan");
        }
        for (p, c) in scratch.power.iter_mut().zip(scratch.spectrum.iter()) {
            *p = c.re * c.re + c.im * c.im;
        }
        for (band, slot) in self.bands.iter().zip(out.iter_mut()) {
            let bins = &scratch.power[band.first_bin..band.first_bin + band.weights.len()];
            *slot = bins.iter().zip(&band.weights).map(|(p, w)| p * w).sum();
        }
    }
}

impl LogMel<'_> {
    /// Frames that hold audio; faster-whisper ignores the final frame when seeking.
    pub(crate) fn content_frames(&self) -> usize {
        self.n_frames.saturating_sub(1)
    }

    /// log10 with its floor, the dynamic-range clamp and Whisper's scaling, in
    /// faster-whisper's order.
    fn normalise(&self, energy: f32) -> f32 {
        (energy.max(1e-10).log10().max(self.floor) + 4.0) / 4.0
    }

    /// Computes frames `[start, start + len)` into `out` as one `[n_mels, 3000]` encoder
    /// window, zero-padded on the right (zeros in the normalised log domain, as
    /// faster-whisper's `pad_or_trim` does).
    pub(crate) fn window_into(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        let len = len
            .min(WINDOW_FRAMES)
            .min(self.n_frames.saturating_sub(start));
        let n_mels = self.front.n_mels;
        let base = out.len();
        out.resize(base + n_mels * WINDOW_FRAMES, 0.0);
        let mut scratch = self.front.scratch();
        let mut energies = vec![0.0f32; n_mels];
        for i in 0..len {
            self.front
                .frame_energies(self.samples, start + i, &mut scratch, &mut energies);
            for (m, &e) in energies.iter().enumerate() {
                out[base + m * WINDOW_FRAMES + i] = self.normalise(e);
            }
        }
    }

    /// The whole spectrogram, mel-major (`data[m * n_frames + t]`). For diagnostics and
    /// parity checks only: the engine never holds a whole recording's features.
    pub(crate) fn to_vec(&self) -> Vec<f32> {
        let n_mels = self.front.n_mels;
        let mut data = vec![0.0f32; n_mels * self.n_frames];
        let mut scratch = self.front.scratch();
        let mut energies = vec![0.0f32; n_mels];
        for t in 0..self.n_frames {
            self.front
                .frame_energies(self.samples, t, &mut scratch, &mut energies);
            for (m, &e) in energies.iter().enumerate() {
                data[m * self.n_frames + t] = self.normalise(e);
            }
        }
        data
    }
}

/// numpy's `reflect` padding index (edge sample not repeated), for any distance.
fn reflect(idx: isize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut i = idx.rem_euclid(period);
    if i >= n as isize {
        i = period - i;
    }
    i as usize
}

/// Slaney-style mel filterbank (librosa's `mel(htk=False, norm="slaney")`), computed in
/// f64 the way faster-whisper does, so no filter file has to ship with a model.
fn slaney_mel_filters(sr: f64, n_fft: usize, n_mels: usize) -> Vec<Vec<f64>> {
    let n_bins = n_fft / 2 + 1;
    let fftfreqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * sr / n_fft as f64).collect();
    let max_mel = 45.245_640_471_924_965;
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    let freqs: Vec<f64> = (0..n_mels + 2)
        .map(|i| {
            let mel = max_mel * i as f64 / (n_mels + 1) as f64;
            if mel >= min_log_mel {
                min_log_hz * (logstep * (mel - min_log_mel)).exp()
            } else {
                f_sp * mel
            }
        })
        .collect();
    (0..n_mels)
        .map(|i| {
            let enorm = 2.0 / (freqs[i + 2] - freqs[i]);
            let fdiff_lo = freqs[i + 1] - freqs[i];
            let fdiff_hi = freqs[i + 2] - freqs[i + 1];
            fftfreqs
                .iter()
                .map(|&f| {
                    let lower = -(freqs[i] - f) / fdiff_lo;
                    let upper = (freqs[i + 2] - f) / fdiff_hi;
                    lower.min(upper).max(0.0) * enorm
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_matches_faster_whisper() {
        let fe = MelFrontEnd::new(80);
        let samples = vec![0.0; 16_000];
        let mel = fe.prepare(&samples);
        assert_eq!(mel.n_frames, 101);
        assert_eq!(mel.content_frames(), 100);
    }

    #[test]
    fn silence_is_flat_at_the_floor() {
        let fe = MelFrontEnd::new(80);
        let samples = vec![0.0; 8_000];
        let data = fe.prepare(&samples).to_vec();
        assert!(data.iter().all(|&v| (v - (-1.5)).abs() < 1e-6));
    }

    #[test]
    fn filters_are_slaney_normalised_triangles() {
        for n_mels in [80, 128] {
            let f = slaney_mel_filters(16_000.0, 400, n_mels);
            assert_eq!(f.len(), n_mels);
            assert!(f.iter().all(|row| row.len() == 201));
            // Every band has some weight and none is negative.
            assert!(f.iter().all(|row| row.iter().any(|&w| w > 0.0)));
            assert!(f.iter().flatten().all(|&w| w >= 0.0));
        }
        // First band of librosa.filters.mel(sr=16000, n_fft=400, n_mels=80): peak weight
        // at bin 1 is 0.02486259 (faster-whisper's get_mel_filters).
        let f = slaney_mel_filters(16_000.0, 400, 80);
        assert!((f[0][1] - 0.024_862_59).abs() < 1e-6, "got {}", f[0][1]);
        // And for large-v3's 128 bins (faster-whisper's get_mel_filters).
        let f = slaney_mel_filters(16_000.0, 400, 128);
        assert!(
            (f[5][3] - 0.005_644_592_206).abs() < 1e-9,
            "got {}",
            f[5][3]
        );
        let total: f64 = f.iter().flatten().sum();
        assert!((total - 3.190_985_528_54).abs() < 1e-8, "got {total}");
    }

    #[test]
    fn a_tone_lands_in_the_right_band() {
        let fe = MelFrontEnd::new(80);
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mel = fe.prepare(&tone);
        let (data, n_frames) = (mel.to_vec(), mel.n_frames);
        let t = 50;
        let loudest = (0..80)
            .max_by(|&a, &b| data[a * n_frames + t].total_cmp(&data[b * n_frames + t]))
            .unwrap();
        // 1 kHz sits at mel 15, i.e. band index ~ 15 / 45.25 * 81 - 1 ≈ 26.
        assert!((25..=27).contains(&loudest), "loudest band {loudest}");
    }

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0,1,2,3], 3, mode="reflect") -> [3,2,1,0,1,2,3,2,1,0]
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    /// The front end as it was before features were made per window: the whole
    /// recording at once, then log10, the global clamp and the scaling.
    fn whole_file(fe: &MelFrontEnd, samples: &[f32]) -> (Vec<f32>, usize) {
        let mut signal = samples.to_vec();
        signal.resize(samples.len() + HOP, 0.0);
        let n = signal.len();
        let n_frames = n / HOP;
        let mut data = vec![0.0f32; fe.n_mels * n_frames];
        let mut frame = fe.fft.make_input_vec();
        let mut spectrum = fe.fft.make_output_vec();
        let mut scratch = fe.fft.make_scratch_vec();
        for t in 0..n_frames {
            let start = (t * HOP) as isize - (N_FFT / 2) as isize;
            for (i, slot) in frame.iter_mut().enumerate() {
                let idx = start + i as isize;
                let s = if idx >= 0 && (idx as usize) < n {
                    signal[idx as usize]
                } else {
                    signal[reflect(idx, n)]
                };
                *slot = s * fe.window[i];
            }
            fe.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .unwrap();
            let power: Vec<f32> = spectrum.iter().map(|c| c.re * c.re + c.im * c.im).collect();
            for (m, band) in fe.bands.iter().enumerate() {
                let bins = &power[band.first_bin..band.first_bin + band.weights.len()];
                data[m * n_frames + t] = bins.iter().zip(&band.weights).map(|(p, w)| p * w).sum();
            }
        }
        let mut max = f32::NEG_INFINITY;
        for v in data.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        let floor = max - 8.0;
        for v in data.iter_mut() {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        (data, n_frames)
    }

    /// A signal with structure everywhere: a chirp, bursts and a little noise.
    fn busy_signal(n: usize) -> Vec<f32> {
        let mut x = 0x2545_f491u32;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let t = i as f32 / 16_000.0;
                let burst = if (i / 5_000) % 3 == 0 { 0.0 } else { 0.3 };
                burst * (2.0 * std::f32::consts::PI * (200.0 + 40.0 * t) * t).sin()
                    + 0.001 * ((x as f32 / u32::MAX as f32) * 2.0 - 1.0)
            })
            .collect()
    }

    #[test]
    fn windows_are_bit_identical_to_whole_file_features() {
        for n_mels in [80, 128] {
            let fe = MelFrontEnd::new(n_mels);
            // 75 s: three windows and a partial one; the short ones exercise the
            // reflect padding that wraps more than once.
            for len in [75 * 16_000 + 123, 16_000, 399, 150, 1, 0] {
                let samples = busy_signal(len);
                let (want, n_frames) = whole_file(&fe, &samples);
                let mel = fe.prepare(&samples);
                assert_eq!(mel.n_frames, n_frames);
                assert_eq!(mel.to_vec(), want, "{len} samples, {n_mels} mels");
                // Windows at the starts the decoder seeks to, including ragged ones and
                // one that runs past the end.
                for start in [0, 1, 1_234, 3_000, 4_567, n_frames.saturating_sub(10)] {
                    let size = WINDOW_FRAMES.min(mel.content_frames().saturating_sub(start));
                    let mut got = vec![7.0f32; 3];
                    mel.window_into(start, size, &mut got);
                    assert_eq!(got.len(), 3 + n_mels * WINDOW_FRAMES);
                    assert_eq!(&got[..3], &[7.0f32; 3], "appends, does not overwrite");
                    for m in 0..n_mels {
                        let row = &got[3 + m * WINDOW_FRAMES..3 + (m + 1) * WINDOW_FRAMES];
                        let take = size.min(n_frames.saturating_sub(start));
                        let src = &want[m * n_frames + start.min(n_frames)..][..take];
                        assert_eq!(&row[..take], src, "{len} samples, start {start}, mel {m}");
                        assert!(row[take..].iter().all(|&v| v == 0.0));
                    }
                }
            }
        }
    }
}
