//! The speech-energy gate: decides, before any inference, that a recording holds
//! nothing to transcribe. faster-whisper runs the full model (and often its whole
//! temperature-fallback ladder) on near-silence only to discard the result; we skip it.
//!
//! The gate is deliberately conservative: it only fires on recordings whose loudest
//! 20 ms frame is below -60 dBFS, or whose frame energies are flat like stationary
//! noise (less than 3 dB between the 10th and 95th percentiles). Quiet speech keeps a
//! large spread between syllables and pauses, so it always reaches the model.

use audio::energy::FrameEnergies;

const FRAME: usize = 320; // 20 ms at 16 kHz
const SILENCE_DBFS: f64 = -60.0;
const MIN_SPREAD_DB: f64 = 3.0;

/// True when the model should not be run at all.
pub(crate) fn nothing_to_transcribe(samples: &[f32]) -> bool {
    let frames = FrameEnergies::measure(samples, FRAME);
    // `None`: shorter than one frame, nothing a model could recognise.
    let Some(loudest) = frames.loudest_db() else {
        return true;
    };
    if loudest < SILENCE_DBFS {
        return true;
    }
    // A spread is only meaningful over a second or more of frames.
    frames.len() >= 50
        && frames
            .percentile_db(0.95)
            .zip(frames.percentile_db(0.10))
            .is_some_and(|(high, low)| high - low < MIN_SPREAD_DB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, amp: f32, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                amp * ((x as f32 / u32::MAX as f32) * 2.0 - 1.0)
            })
            .collect()
    }

    #[test]
    fn digital_silence_and_faint_hiss_are_skipped() {
        assert!(nothing_to_transcribe(&vec![0.0; 48_000]));
        assert!(nothing_to_transcribe(&noise(48_000, 0.0005, 1)));
        assert!(nothing_to_transcribe(&[0.1; 100]));
    }

    #[test]
    fn loud_stationary_noise_is_skipped() {
        assert!(nothing_to_transcribe(&noise(48_000, 0.3, 2)));
    }

    #[test]
    fn bursts_like_syllables_reach_the_model_even_when_quiet() {
        // 0.2 s bursts at about -46 dBFS separated by 0.2 s pauses over a faint floor.
        let mut s = noise(48_000, 0.0003, 3);
        for (i, v) in s.iter_mut().enumerate() {
            if (i / 3200) % 2 == 0 {
                *v += 0.007 * (i as f32 * 0.2).sin();
            }
        }
        assert!(!nothing_to_transcribe(&s));
    }
}
