#!/usr/bin/env python3
"""Transcribe files with faster-whisper (the reference implementation and the speed peer).

Default `transcribe()` options, compute_type="int8", on CPU. Prints one JSON object per
file (file, text, language, duration_s, segments) to stdout, in the same shape as
`voxq-worker transcribe --format jsonl`. Only for benchmarks and reference generation:
faster-whisper is never a dependency of the product.

    fw_transcribe.py --model-dir DIR [--threads N] FILE...
"""
import argparse
import json
import sys
import time

t0 = time.perf_counter()
from faster_whisper import WhisperModel  # noqa: E402  (import time is part of the cost)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    model = WhisperModel(args.model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)
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
