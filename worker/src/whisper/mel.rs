//! Whisper's log-mel front end, computed as faster-whisper's `FeatureExtractor` does:
//! n_fft 400, hop 160, periodic Hann window, centred reflect padding, Slaney mel
//! filters computed here for any number of bins, log10 with a 1e-10 floor, an 8-decade
//! dynamic range taken over the whole recording, then `(x + 4) / 4`.
//!
//! The dynamic-range clamp is global on purpose: faster-whisper computes it over the
//! whole file, not per 30-second window, and the model's output depends on it.

use std::sync::Arc;

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

/// A log-mel spectrogram laid out mel-major: `data[m * n_frames + t]`.
pub(crate) struct LogMel {
    pub(crate) n_mels: usize,
    pub(crate) n_frames: usize,
    data: Vec<f32>,
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

    /// Log-mel features of 16 kHz mono samples. Like faster-whisper, the signal is first
    /// padded with one hop of zeros and the last STFT frame is dropped, so the result
    /// has `len / 160 + 1` frames.
    pub(crate) fn compute(&self, samples: &[f32]) -> LogMel {
        let mut signal = Vec::with_capacity(samples.len() + HOP);
        signal.extend_from_slice(samples);
        signal.resize(samples.len() + HOP, 0.0);
        let n = signal.len();
        let pad = N_FFT / 2;
        let n_frames = n / HOP; // 1 + (n + 2*pad - N_FFT) / HOP, minus the dropped frame
        let mut data = vec![0.0f32; self.n_mels * n_frames];

        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = [0.0f32; N_BINS];
        for t in 0..n_frames {
            let start = (t * HOP) as isize - pad as isize;
            for (i, slot) in frame.iter_mut().enumerate() {
                let idx = start + i as isize;
                let s = if idx >= 0 && (idx as usize) < n {
                    signal[idx as usize]
                } else {
                    signal[reflect(idx, n)]
                };
                *slot = s * self.window[i];
            }
            // The planner was built for N_FFT and the buffers by the plan: this cannot fail.
            if self
                .fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .is_err()
            {
                unreachable!("FFT buffers are sized by their own plan");
            }
            for (p, c) in power.iter_mut().zip(spectrum.iter()) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, band) in self.bands.iter().enumerate() {
                let bins = &power[band.first_bin..band.first_bin + band.weights.len()];
                let energy: f32 = bins.iter().zip(&band.weights).map(|(p, w)| p * w).sum();
                data[m * n_frames + t] = energy;
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
        LogMel {
            n_mels: self.n_mels,
            n_frames,
            data,
        }
    }
}

impl LogMel {
    pub(crate) fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Frames that hold audio; faster-whisper ignores the final frame when seeking.
    pub(crate) fn content_frames(&self) -> usize {
        self.n_frames.saturating_sub(1)
    }

    /// Copies frames `[start, start + len)` into `out` as one `[n_mels, 3000]` encoder
    /// window, zero-padded on the right (zeros in the normalised log domain, as
    /// faster-whisper's `pad_or_trim` does).
    pub(crate) fn window_into(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        let len = len
            .min(WINDOW_FRAMES)
            .min(self.n_frames.saturating_sub(start));
        let base = out.len();
        out.resize(base + self.n_mels * WINDOW_FRAMES, 0.0);
        for m in 0..self.n_mels {
            let src = &self.data[m * self.n_frames + start..m * self.n_frames + start + len];
            let dst = base + m * WINDOW_FRAMES;
            out[dst..dst + len].copy_from_slice(src);
        }
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
        let mel = fe.compute(&vec![0.0; 16_000]);
        assert_eq!(mel.n_frames, 101);
        assert_eq!(mel.content_frames(), 100);
    }

    #[test]
    fn silence_is_flat_at_the_floor() {
        let fe = MelFrontEnd::new(80);
        let mel = fe.compute(&vec![0.0; 8_000]);
        assert!(mel.data.iter().all(|&v| (v - (-1.5)).abs() < 1e-6));
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
        let mel = fe.compute(&tone);
        let t = 50;
        let loudest = (0..80)
            .max_by(|&a, &b| {
                mel.data[a * mel.n_frames + t].total_cmp(&mel.data[b * mel.n_frames + t])
            })
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
}
