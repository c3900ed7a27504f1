//! Frame energies of decoded audio: the mean square of each fixed-length frame of
//! [`SAMPLE_RATE`](crate::SAMPLE_RATE) mono samples, and its level in dB.
//!
//! One analyser for every caller that looks at short-time energy (the worker's silence
//! gate before inference, the scoring stage's energy VAD), so that "the level of a frame"
//! and "a percentile of frame levels" mean one thing. Each caller picks its own frame
//! length and thresholds.

/// The floor of every level, dB: digital silence (power 0) or anything below 1e-12 in
/// power, so a level is always a finite number.
pub const FLOOR_DB: f64 = -120.0;

/// 10·log10 of a power (a mean square), clamped to [`FLOOR_DB`].
pub fn power_db(power: f64) -> f64 {
    if power > 0.0 {
        (10.0 * power.log10()).max(FLOOR_DB)
    } else {
        FLOOR_DB
    }
}

/// Mean square of `samples` in `f64`; 0 when there are none.
pub fn mean_square(samples: &[f32]) -> f64 {
    samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64
}

/// The energies of the whole frames of one recording.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameEnergies {
    /// Mean square of each frame, in time order.
    powers: Vec<f64>,
    /// [`power_db`] of each frame, quietest first.
    sorted_db: Vec<f64>,
}

impl FrameEnergies {
    /// Measures consecutive, non-overlapping frames of `frame_len` samples. A trailing
    /// partial frame is left out: its level would not be comparable with the others.
    ///
    /// # Panics
    /// When `frame_len` is 0.
    pub fn measure(samples: &[f32], frame_len: usize) -> Self {
        assert!(frame_len > 0, "frame length must be positive");
        let powers: Vec<f64> = samples.chunks_exact(frame_len).map(mean_square).collect();
        let mut sorted_db: Vec<f64> = powers.iter().map(|&p| power_db(p)).collect();
        sorted_db.sort_by(f64::total_cmp);
        Self { powers, sorted_db }
    }

    /// Mean square of each frame, in time order.
    pub fn powers(&self) -> &[f64] {
        &self.powers
    }

    /// Number of whole frames.
    pub fn len(&self) -> usize {
        self.powers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.powers.is_empty()
    }

    /// Level of the loudest frame, dB; `None` without frames.
    pub fn loudest_db(&self) -> Option<f64> {
        self.sorted_db.last().copied()
    }

    /// Frame level at fraction `p` (0 = quietest, 1 = loudest) of the sorted levels,
    /// dB: the level of rank `round((frames - 1) · p)`, no interpolation, so the result
    /// is always a level some frame has. `p` outside 0–1 gives the quietest or the
    /// loudest. `None` without frames.
    pub fn percentile_db(&self, p: f64) -> Option<f64> {
        let last = self.sorted_db.len().checked_sub(1)?;
        // `as usize` saturates: a negative (or NaN) rank is 0.
        let rank = (last as f64 * p).round() as usize;
        Some(self.sorted_db[rank.min(last)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_db_of_the_mean_square_with_a_floor() {
        assert_eq!(power_db(1.0), 0.0);
        assert!((power_db(0.5) + 3.0103).abs() < 1e-4);
        assert_eq!(power_db(0.0), FLOOR_DB);
        assert_eq!(power_db(1e-15), FLOOR_DB);
        assert_eq!(mean_square(&[]), 0.0);
        assert_eq!(mean_square(&[0.5, -0.5, 1.0, 0.0]), 0.375);
    }

    #[test]
    fn whole_frames_only_in_time_order() {
        // Three frames of 4 at amplitudes 0.1, 1.0 and 0, then 3 samples left over.
        let samples: Vec<f32> = [0.1f32, 1.0, 0.0, 0.5]
            .iter()
            .enumerate()
            .flat_map(|(i, &a)| std::iter::repeat_n(a, if i == 3 { 3 } else { 4 }))
            .collect();
        let frames = FrameEnergies::measure(&samples, 4);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames.powers(), [f64::from(0.1f32).powi(2), 1.0, 0.0]);
        assert_eq!(frames.loudest_db(), Some(0.0));
        assert_eq!(frames.percentile_db(0.0), Some(FLOOR_DB));
        assert_eq!(
            frames.percentile_db(0.5),
            Some(power_db(frames.powers()[0]))
        );
        assert_eq!(frames.percentile_db(-1.0), Some(FLOOR_DB));
        assert_eq!(frames.percentile_db(7.0), Some(0.0));
    }

    #[test]
    fn percentile_rounds_to_the_nearest_rank() {
        // Levels -100, -99, …, -1 dB: rank round(99 · p).
        let samples: Vec<f32> = (1..=100)
            .rev()
            .flat_map(|db| {
                let amplitude = 10f64.powf(-f64::from(db) / 20.0) as f32;
                [amplitude, -amplitude]
            })
            .collect();
        let frames = FrameEnergies::measure(&samples, 2);
        let at = |p: f64| frames.percentile_db(p).unwrap().round();
        assert_eq!(at(0.10), -90.0);
        assert_eq!(at(0.95), -6.0);
        assert_eq!(at(1.0), -1.0);
    }

    #[test]
    fn too_short_for_a_frame_has_no_levels() {
        let frames = FrameEnergies::measure(&[0.5; 319], 320);
        assert!(frames.is_empty());
        assert_eq!(frames.loudest_db(), None);
        assert_eq!(frames.percentile_db(0.5), None);
        assert!(FrameEnergies::measure(&[], 320).is_empty());
    }
}
