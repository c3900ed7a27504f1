#!/usr/bin/env python3
"""Transcribe files with faster-whisper (the reference implementation and the speed peer).

Default `transcribe()` options, compute_type="int8", on CPU. Prints one JSON object per
file (file, text, language, duration_s, segments) to stdout, in the same shape as
`voxq-worker transcribe --format jsonl`. Only for benchmarks and reference generation:
faster-whisper is never a dependency of the product.

    fw_transcribe.py --model-dir DIR [--threads N] [--language CODE] [--language-probs]
                     [--word-timestamps] [--vad-filter] [--vad-options JSON]
                     [--batched N] [--perturb-ulp FRACTION] FILE...
    fw_transcribe.py --vad-only [--probs] [--vad-options JSON] FILE...

--perturb-ulp moves that fraction of faster-whisper's own float32 log-mel values by one
unit in the last place (up or down at random, fixed seed): the smallest change a
different but equally correct front end makes. bench/run.sh uses it to measure how far
faster-whisper agrees with itself, the noise floor of the word-for-word parity check.

--word-timestamps   `transcribe(word_timestamps=True)`; every segment gets
                    `words: [[word, start, end, probability], ...]` (word as faster-whisper
                    returns it, with its leading space).
--vad-filter        `transcribe(vad_filter=True)` (Silero VAD, faster-whisper's VadOptions
                    defaults unless --vad-options gives some).
--batched N         `BatchedInferencePipeline(model).transcribe(f, batch_size=N)` with that
                    pipeline's own defaults, as users run it: vad_filter=True (VadOptions
                    max_speech_duration_s=30, min_silence_duration_ms=160) and
                    without_timestamps=True. It batches the VAD chunks of one file, so
                    notes under 30 s are one chunk whatever N is.
--language-probs    adds `language_probability` to every line (`language` is always there).
--vad-only          no model: prints per file `{file, speech: [[start, end], ...]}` from
                    faster-whisper's `get_speech_timestamps` (sample indices at 16 kHz) and,
                    with --probs, `probs`: Silero's speech probability per 512-sample window.
"""
import argparse
import json
import sys
import time

t0 = time.perf_counter()
from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio  # noqa: E402
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model  # noqa: E402

# (import time is part of the measured cost)


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


def vad_only(args) -> int:
    import numpy as np

    opts = VadOptions(**args.vad_options) if args.vad_options else VadOptions()
    for f in args.files:
        try:
            audio = decode_audio(f, sampling_rate=16000)
            speech = get_speech_timestamps(audio, opts)
            out = {"file": f, "samples": int(audio.shape[0]),
                   "speech": [[int(s["start"]), int(s["end"])] for s in speech], "error": None}
            if args.probs:
                # The same padding and model call get_speech_timestamps makes (vad.py).
                window = 512
                padded = np.pad(audio, (0, window - audio.shape[0] % window))
                out["probs"] = [float(p) for p in np.asarray(get_vad_model()(padded)).reshape(-1)]
        except Exception as e:  # a bad file must not stop the run
            out = {"file": f, "speech": None, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--language", default=None)
    ap.add_argument("--language-probs", action="store_true")
    ap.add_argument("--word-timestamps", action="store_true")
    ap.add_argument("--vad-filter", action="store_true")
    ap.add_argument("--vad-options", type=json.loads, default=None,
                    help='VadOptions fields as JSON, e.g. \'{"min_silence_duration_ms": 500}\'')
    ap.add_argument("--batched", type=int, default=0, metavar="N")
    ap.add_argument("--vad-only", action="store_true")
    ap.add_argument("--probs", action="store_true")
    ap.add_argument("--perturb-ulp", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.vad_only:
        return vad_only(args)
    if not args.model_dir:
        ap.error("--model-dir is required (except with --vad-only)")

    model = WhisperModel(args.model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)
    if args.perturb_ulp > 0:
        model.feature_extractor = UlpPerturbed(model.feature_extractor, args.perturb_ulp, args.seed)
    options = {}
    if args.language:
        options["language"] = args.language
    if args.word_timestamps:
        options["word_timestamps"] = True
    if args.vad_options is not None:
        options["vad_parameters"] = args.vad_options
    if args.batched > 0:
        # The pipeline's defaults stay (vad_filter=True, without_timestamps=True).
        pipeline = BatchedInferencePipeline(model)
        options["batch_size"] = args.batched

        def transcribe(f):
            return pipeline.transcribe(f, **options)
    else:
        if args.vad_filter:
            options["vad_filter"] = True

        def transcribe(f):
            return model.transcribe(f, **options)

    t_load = time.perf_counter()
    for f in args.files:
        try:
            segments, info = transcribe(f)
            segments = list(segments)  # the generator does the work
            segs = []
            for s in segments:
                seg = {
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "text": s.text.strip(),
                    "avg_logprob": s.avg_logprob,
                    "no_speech_prob": s.no_speech_prob,
                }
                if args.word_timestamps:
                    seg["words"] = [[w.word, round(w.start, 3), round(w.end, 3), round(w.probability, 4)]
                                    for w in (s.words or [])]
                segs.append(seg)
            # Segment texts carry their leading space: join them as the model spaced them.
            text = "".join(s.text for s in segments).strip()
            out = {"file": f, "text": text, "language": info.language}
            if args.language_probs:
                out["language_probability"] = info.language_probability
            out.update({"duration_s": info.duration, "segments": segs, "error": None})
        except Exception as e:  # a bad file must not stop the reference run
            out = {"file": f, "text": None, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    t_end = time.perf_counter()
    print(f"faster-whisper: import+load {t_load - t0:.2f}s, transcribe {t_end - t_load:.2f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
