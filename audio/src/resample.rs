//! Mono sample-rate conversion to [`SAMPLE_RATE`] with rubato's synchronous FFT resampler.
//!
//! The FFT resampler is the right tool here: the ratio is fixed per file, it is much cheaper
//! than sinc interpolation at the same quality, and its anti-aliasing filter matters when
//! going from 44.1/48 kHz down to 16 kHz.
//!
//! [`StreamResampler`] is fed as packets are decoded, so the full-rate signal of a long
//! recording never has to exist in memory; only the 16 kHz result is accumulated.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use super::{DecodeError, SAMPLE_RATE};

/// Target input chunk, in frames. rubato rounds it to a multiple of the smallest block that
/// maps exactly onto whole output frames (e.g. 1323 for 44.1 kHz, 1026 for 48 kHz); around a
/// thousand frames keeps the FFTs small and cache-friendly without much per-call overhead.
const CHUNK_FRAMES: usize = 1024;

/// Source rates accepted: every real audio rate (telephony 8 kHz to studio 384 kHz), with
/// room either side.
const SOURCE_RATES: std::ops::RangeInclusive<u32> = 1_000..=768_000;

/// Resamples a whole mono clip from `source_rate` to [`SAMPLE_RATE`].
///
/// The output holds `ceil(samples.len() * 16000 / source_rate)` samples and is time-aligned
/// with the input (the resampler's start-up delay is trimmed). At 16 kHz the input is copied
/// unchanged.
pub fn resample_mono(samples: &[f32], source_rate: u32) -> Result<Vec<f32>, DecodeError> {
    let mut resampler = StreamResampler::new(source_rate)?;
    resampler.reserve(output_len(samples.len() as u64, source_rate));
    resampler.push(samples)?;
    resampler.finish()
}

/// Incremental mono resampler: [`push`](Self::push) any number of slices of any length, then
/// [`finish`](Self::finish) to flush the tail.
///
/// After construction, the only allocations are growth of the output vector; chunks are
/// resampled straight from the caller's slice whenever they are whole.
pub(crate) struct StreamResampler {
    source_rate: u32,
    /// `None` when the source is already at [`SAMPLE_RATE`].
    engine: Option<Engine>,
    input_frames: u64,
    output: Vec<f32>,
}

struct Engine {
    fft: Fft<f32>,
    /// Input frames rubato consumes per call; constant with `FixedSync::Both`.
    chunk_in: usize,
    /// Carry-over of input that did not fill a whole chunk yet (capacity `chunk_in`).
    pending: Vec<f32>,
    /// One call's worth of output (`output_frames_max`), copied out after each call.
    scratch: Vec<f32>,
    /// Output frames still to drop: the FFT overlap delays everything by this much, and
    /// dropping it is what keeps output sample `i` at the same time as input `i * ratio`.
    delay_left: usize,
}

impl StreamResampler {
    pub(crate) fn new(source_rate: u32) -> Result<Self, DecodeError> {
        // The rate comes from the file's header. rubato sizes its FFTs by
        // rate / gcd(rate, 16000), so a hostile prime rate would ask for tens of GB and
        // abort the process (an allocation failure is not a catchable panic).
        if !SOURCE_RATES.contains(&source_rate) {
            return Err(DecodeError::Resample {
                detail: format!(
                    "sample rate {source_rate} Hz is outside {}..={} Hz",
                    SOURCE_RATES.start(),
                    SOURCE_RATES.end()
                ),
            });
        }
        let engine = if source_rate == SAMPLE_RATE {
            None
        } else {
            let fft = Fft::<f32>::new(
                source_rate as usize,
                SAMPLE_RATE as usize,
                CHUNK_FRAMES,
                1,
                FixedSync::Both,
            )
            .map_err(|e| DecodeError::Resample {
                detail: format!("cannot convert {source_rate} Hz to {SAMPLE_RATE} Hz: {e}"),
            })?;
            let chunk_in = fft.input_frames_next();
            Some(Engine {
                chunk_in,
                pending: Vec::with_capacity(chunk_in),
                scratch: vec![0.0; fft.output_frames_max()],
                delay_left: fft.output_delay(),
                fft,
            })
        };
        Ok(Self {
            source_rate,
            engine,
            input_frames: 0,
            output: Vec::new(),
        })
    }

    pub(crate) fn source_rate(&self) -> u32 {
        self.source_rate
    }

    /// Pre-sizes the output for `frames` more output samples.
    pub(crate) fn reserve(&mut self, frames: usize) {
        self.output.reserve(frames);
    }

    pub(crate) fn push(&mut self, mut input: &[f32]) -> Result<(), DecodeError> {
        self.input_frames += input.len() as u64;
        let Some(engine) = self.engine.as_mut() else {
            self.output.extend_from_slice(input);
            return Ok(());
        };

        if !engine.pending.is_empty() {
            let take = (engine.chunk_in - engine.pending.len()).min(input.len());
            engine.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if engine.pending.len() < engine.chunk_in {
                return Ok(());
            }
            engine.process_pending(None, &mut self.output)?;
        }

        let mut chunks = input.chunks_exact(engine.chunk_in);
        for chunk in &mut chunks {
            engine.process(chunk, None, &mut self.output)?;
        }
        engine.pending.extend_from_slice(chunks.remainder());
        Ok(())
    }

    /// Flushes buffered input and the resampler's delay line, returning exactly
    /// `ceil(input_frames * 16000 / source_rate)` samples.
    pub(crate) fn finish(mut self) -> Result<Vec<f32>, DecodeError> {
        let expected = output_len(self.input_frames, self.source_rate);
        if let Some(engine) = self.engine.as_mut() {
            if !engine.pending.is_empty() {
                let len = engine.pending.len();
                engine.process_pending(Some(len), &mut self.output)?;
            }
            // The last `delay` output frames are still inside the overlap buffer; feeding
            // silence pushes them out. Each call yields at least one frame, so this ends.
            while self.output.len() < expected {
                engine.process(&[], Some(0), &mut self.output)?;
            }
        }
        self.output.truncate(expected);
        Ok(self.output)
    }
}

impl Engine {
    fn process_pending(
        &mut self,
        partial_len: Option<usize>,
        output: &mut Vec<f32>,
    ) -> Result<(), DecodeError> {
        // Swap out rather than borrow so `process` can take `&mut self`; no allocation happens.
        let pending = std::mem::take(&mut self.pending);
        let result = self.process(&pending, partial_len, output);
        self.pending = pending;
        self.pending.clear();
        result
    }

    /// Runs one rubato call on `input` (a whole chunk, or fewer frames with `partial_len`, in
    /// which case rubato pads with silence) and appends the delay-trimmed output.
    fn process(
        &mut self,
        input: &[f32],
        partial_len: Option<usize>,
        output: &mut Vec<f32>,
    ) -> Result<(), DecodeError> {
        let adapter_in = InterleavedSlice::new(input, 1, input.len()).map_err(resample_error)?;
        let out_frames = self.scratch.len();
        let mut adapter_out =
            InterleavedSlice::new_mut(&mut self.scratch, 1, out_frames).map_err(resample_error)?;
        let indexing = partial_len.map(|len| Indexing::new().partial_len(len));
        let (_, written) = self
            .fft
            .process_into_buffer(&adapter_in, &mut adapter_out, indexing.as_ref())
            .map_err(resample_error)?;

        let skip = self.delay_left.min(written);
        self.delay_left -= skip;
        output.extend_from_slice(&self.scratch[skip..written]);
        Ok(())
    }
}

fn resample_error(err: impl std::fmt::Display) -> DecodeError {
    DecodeError::Resample {
        detail: err.to_string(),
    }
}

/// Output length for `input_frames` at `source_rate`, rounded up so a trailing partial
/// output period is kept rather than dropped.
fn output_len(input_frames: u64, source_rate: u32) -> usize {
    let rate = u128::from(source_rate.max(1));
    let frames = (u128::from(input_frames) * u128::from(SAMPLE_RATE)).div_ceil(rate);
    usize::try_from(frames).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_header_rates_are_refused_before_allocating() {
        for rate in [0, 999, 4_294_967_291, 768_001] {
            let err = super::StreamResampler::new(rate).err().expect("refused");
            assert_eq!(err.code(), "resample-failed", "{rate}");
            assert!(err.to_string().contains(&rate.to_string()), "{err}");
        }
        for rate in [
            8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 192_000, 384_000,
        ] {
            assert!(super::StreamResampler::new(rate).is_ok(), "{rate}");
        }
    }

    use super::super::test_util::zero_crossing_freq;
    use super::*;

    fn sine(rate: u32, freq: f64, seconds: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds).round() as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (0.5 * (2.0 * std::f64::consts::PI * freq * t).sin()) as f32
            })
            .collect()
    }

    #[test]
    fn lengths_match_ratio() {
        for (rate, len, expected) in [
            (8_000, 8_000, 16_000),
            (44_100, 44_100, 16_000),
            (48_000, 48_000, 16_000),
            (44_100, 1, 1),
            (48_000, 100, 34),
            (22_050, 12_345, 8_958),
            (16_000, 777, 777),
        ] {
            let out = resample_mono(&vec![0.1; len], rate).expect("resamples");
            assert_eq!(out.len(), expected, "{rate} Hz, {len} frames");
        }
        assert!(resample_mono(&[], 44_100).expect("resamples").is_empty());
    }

    #[test]
    fn keeps_frequency() {
        for rate in [8_000, 11_025, 22_050, 44_100, 48_000, 96_000] {
            let out = resample_mono(&sine(rate, 440.0, 1.0), rate).expect("resamples");
            let f = zero_crossing_freq(&out, SAMPLE_RATE, 800);
            assert!((f - 440.0).abs() < 2.0, "{rate} Hz: got {f:.2} Hz");
        }
    }

    #[test]
    fn output_is_time_aligned() {
        // An impulse at 0.25 s must land at 0.25 s in the output, not a filter delay later.
        for rate in [8_000, 44_100, 48_000] {
            let mut input = vec![0.0f32; rate as usize / 2];
            input[rate as usize / 4] = 1.0;
            let out = resample_mono(&input, rate).expect("resamples");
            let peak = out
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .expect("non-empty");
            assert!(peak.abs_diff(4_000) <= 1, "{rate} Hz: peak at {peak}");
        }
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let input = sine(44_100, 440.0, 0.5);
        let whole = resample_mono(&input, 44_100).expect("resamples");

        let mut streamed = StreamResampler::new(44_100).expect("constructs");
        // Uneven slices exercise both the carry-over and the direct whole-chunk paths.
        let mut rest = &input[..];
        for size in [1, 7, 1_000, 1_323, 2_700, 5].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at((*size).min(rest.len()));
            streamed.push(head).expect("pushes");
            rest = tail;
        }
        let streamed = streamed.finish().expect("finishes");

        assert_eq!(whole.len(), streamed.len());
        for (a, b) in whole.iter().zip(&streamed) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn passthrough_at_target_rate() {
        let input = sine(SAMPLE_RATE, 440.0, 0.1);
        assert_eq!(resample_mono(&input, SAMPLE_RATE).expect("copies"), input);
    }

    #[test]
    fn zero_rate_is_an_error() {
        let err = resample_mono(&[0.0; 10], 0).unwrap_err();
        assert_eq!(err.code(), "resample-failed");
    }
}
