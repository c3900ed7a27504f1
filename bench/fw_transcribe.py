#!/usr/bin/env python3
"""Transcribe files with faster-whisper (the reference implementation and the speed peer).

Default `transcribe()` options, compute_type="int8", on CPU. Prints one JSON object per
file (file, text, language, duration_s, segments) to stdout, in the same shape as
`voxq-worker transcribe --format jsonl`. Only for benchmarks and reference generation:
faster-whisper is never a dependency of the product.

    fw_transcribe.py --model-dir DIR [--threads N] [--perturb-ulp FRACTION] FILE...

--perturb-ulp moves that fraction of faster-whisper's own float32 log-mel values by one
unit in the last place (up or down at random, fixed seed): the smallest change a
different but equally correct front end makes. bench/run.sh uses it to measure how far
faster-whisper agrees with itself, the noise floor of the word-for-word parity check.
"""
import argparse
import json
import sys
import time

t0 = time.perf_counter()
from faster_whisper import WhisperModel  # noqa: E402  (import time is part of the cost)


class UlpPerturbed:
    """Wraps faster-whisper's FeatureExtractor; nudges a fraction of its output by 1 ULP."""

    def __init__(self, inner, fraction, seed):
        import numpy as np

        self.inner, self.fraction, self.np = inner, fraction, np
        self.rng = np.random.default_rng(seed)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        np = self.np
        mel = self.inner(*args, **kwargs).astype(np.float32)
        pick = self.rng.random(mel.shape) < self.fraction
        up = self.rng.random(mel.shape) < 0.5
        toward = np.where(up, np.float32(np.inf), np.float32(-np.inf))
        return np.where(pick, np.nextafter(mel, toward), mel).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--perturb-ulp", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    model = WhisperModel(args.model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)
    if args.perturb_ulp > 0:
        model.feature_extractor = UlpPerturbed(model.feature_extractor, args.perturb_ulp, args.seed)
    t_load = time.perf_counter()
    for f in args.files:
        try:
            segments, info = model.transcribe(f)
            segments = list(segments)  # the generator does the work
            segs = [
                {
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "text": s.text.strip(),
                    "avg_logprob": s.avg_logprob,
                    "no_speech_prob": s.no_speech_prob,
                }
                for s in segments
            ]
            # Segment texts carry their leading space: join them as the model spaced them.
            text = "".join(s.text for s in segments).strip()
            out = {"file": f, "text": text, "language": info.language,
                   "duration_s": info.duration, "segments": segs, "error": None}
        except Exception as e:  # a bad file must not stop the reference run
            out = {"file": f, "text": None, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    t_end = time.perf_counter()
    print(f"faster-whisper: import+load {t_load - t0:.2f}s, transcribe {t_end - t_load:.2f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
