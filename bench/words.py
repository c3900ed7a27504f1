#!/usr/bin/env python3
"""Word timestamps of voxq against faster-whisper's (bench/words.sh drives it).

    words.py fw --model-dir DIR [--threads N] [--word-timestamps] [--vad-filter] FILE...
        faster-whisper's default `transcribe()` (int8, CPU), one JSON object per file in
        the shape of `voxq-worker transcribe --format jsonl`; with --word-timestamps each
        segment has `words: [{word, start, end, probability}]`, the word trimmed as voxq
        trims it. Needs the venv with faster-whisper.
    words.py compare --set NAME FW_WORDS VOXQ_WORDS [--fw-plain F --voxq-plain F]
        Matches each file's words (difflib.SequenceMatcher over normalised words: NFKC,
        casefold, punctuation and symbols removed) and prints the matched share and the
        absolute start/end differences of matched words (median, p95, max), against the
        goal: median <= 20 ms for starts and for ends. With the *-plain files (the same
        engine without word timestamps) it also prints whether word timestamps changed
        the segment texts: faster-whisper moves its window seek to the last word's end,
        so on audio longer than one window the text may change.

Standard library only, except `fw` (faster-whisper).
"""
import argparse
import difflib
import json
import os
import statistics
import sys
import time
import unicodedata

GOAL_MS = 20.0


def norm_word(w: str) -> str:
    """NFKC, casefold, without punctuation (P*) and symbols (S*): the matching key."""
    w = unicodedata.normalize("NFKC", w).casefold()
    return "".join(ch for ch in w if not unicodedata.category(ch).startswith(("P", "S"))).strip()


def load_jsonl(path: str) -> dict:
    """file basename -> result object (lines that are not JSON, e.g. logs, are skipped)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            o = json.loads(line)
            if "file" in o:
                out[os.path.basename(o["file"])] = o
    return out


def words_of(result: dict) -> list:
    """[(key, start, end, word)] of every word of every segment, in order."""
    out = []
    for seg in result.get("segments") or []:
        for w in seg.get("words") or []:
            out.append((norm_word(w["word"]), float(w["start"]), float(w["end"]), w["word"]))
    return out


def pct(values: list, q: float) -> float:
    """Inclusive percentile (q in 0..100) of a non-empty list."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(values)


def fw(args) -> int:
    t0 = time.perf_counter()
    from faster_whisper import WhisperModel

    model = WhisperModel(args.model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)
    t_load = time.perf_counter()
    for f in args.files:
        try:
            segments, info = model.transcribe(
                f, word_timestamps=args.word_timestamps, vad_filter=args.vad_filter
            )
            segments = list(segments)
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
                    seg["words"] = [
                        {"word": w.word.strip(), "start": w.start, "end": w.end,
                         "probability": w.probability}
                        for w in (s.words or [])
                    ]
                segs.append(seg)
            out = {
                "file": f,
                "text": "".join(s.text for s in segments).strip(),
                "language": info.language,
                "language_probability": info.language_probability,
                "duration_s": info.duration,
                "duration_after_vad_s": info.duration_after_vad,
                "segments": segs,
                "error": None,
            }
        except Exception as e:  # a bad file must not stop the run
            out = {"file": f, "text": None, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out, ensure_ascii=False), flush=True)
    print(f"faster-whisper: import+load {t_load - t0:.2f}s, transcribe {time.perf_counter() - t_load:.2f}s",
          file=sys.stderr)
    return 0


def texts_changed(plain: dict, timed: dict) -> list:
    """Files whose segment texts differ between the run without and with word timestamps."""
    changed = []
    for name in sorted(set(plain) & set(timed)):
        a = [s["text"] for s in plain[name].get("segments") or []]
        b = [s["text"] for s in timed[name].get("segments") or []]
        if a != b:
            changed.append(name)
    return changed


def compare(args) -> int:
    ref, ours = load_jsonl(args.fw_words), load_jsonl(args.voxq_words)
    tag = f"WORDS [{args.set}]"
    names = sorted(set(ref) | set(ours))
    d_start, d_end = [], []
    n_ref = n_ours = n_matched = same_words = files_with_words = 0
    print(f"{tag} per file: fw_words voxq_words matched  med|dstart|ms med|dend|ms  max|d|ms  same_words")
    for name in names:
        a = words_of(ref.get(name, {}))
        b = words_of(ours.get(name, {}))
        if not a and not b:
            continue
        files_with_words += 1
        ka = [w[0] for w in a if w[0]]
        kb = [w[0] for w in b if w[0]]
        a = [w for w in a if w[0]]
        b = [w for w in b if w[0]]
        sm = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
        ds, de = [], []
        for blk in sm.get_matching_blocks():
            for k in range(blk.size):
                wa, wb = a[blk.a + k], b[blk.b + k]
                # Times are rounded to 10 ms by both: round the float noise away.
                ds.append(round(abs(wa[1] - wb[1]) * 1000, 1))
                de.append(round(abs(wa[2] - wb[2]) * 1000, 1))
        same = ka == kb
        same_words += same
        n_ref, n_ours, n_matched = n_ref + len(ka), n_ours + len(kb), n_matched + len(ds)
        d_start += ds
        d_end += de
        if ds:
            print(f"  {name:36} {len(ka):4} {len(kb):4} {len(ds):4}  {statistics.median(ds):8.0f} "
                  f"{statistics.median(de):8.0f} {max(ds + de):8.0f}  {'yes' if same else 'NO'}")
        else:
            print(f"  {name:36} {len(ka):4} {len(kb):4} {0:4}  {'-':>8} {'-':>8} {'-':>8}  NO")
        if not same and args.show_diffs:
            print(f"      fw:   {' '.join(w[3] for w in a)}\n      voxq: {' '.join(w[3] for w in b)}")
    if files_with_words == 0 or not d_start:
        print(f"{tag}: no matched words (fw {n_ref}, voxq {n_ours}); goal MAD <= {GOAL_MS:.0f} ms: FAIL")
        return 1
    share = n_matched / max(n_ref, n_ours)
    med_s, med_e = statistics.median(d_start), statistics.median(d_end)
    print(f"{tag}: {files_with_words} files, same word sequence in {same_words}/{files_with_words}; "
          f"matched {n_matched} words of fw {n_ref} / voxq {n_ours} = {share:.1%}")
    print(f"{tag}: |dstart| median {med_s:.1f} ms, p95 {pct(d_start, 95):.1f} ms, max {max(d_start):.1f} ms; "
          f"|dend| median {med_e:.1f} ms, p95 {pct(d_end, 95):.1f} ms, max {max(d_end):.1f} ms")
    within = sum(1 for x, y in zip(d_start, d_end) if x <= GOAL_MS and y <= GOAL_MS)
    print(f"{tag}: words with both |dstart| and |dend| <= {GOAL_MS:.0f} ms: {within}/{n_matched} = {within / n_matched:.1%}")
    ok = med_s <= GOAL_MS and med_e <= GOAL_MS
    print(f"{tag}: goal MAD <= {GOAL_MS:.0f} ms (median |dstart| and median |dend|): {'PASS' if ok else 'FAIL'}")
    for engine, plain_path, timed in (("faster-whisper", args.fw_plain, ref), ("voxq", args.voxq_plain, ours)):
        if not plain_path:
            continue
        plain = load_jsonl(plain_path)
        changed = texts_changed(plain, timed)
        n = len(set(plain) & set(timed))
        print(f"{tag}: {engine} segment texts changed by word timestamps: {len(changed)}/{n}"
              + (f" ({', '.join(changed)})" if changed else ""))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fw")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--vad-filter", action="store_true")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=fw)
    p = sub.add_parser("compare")
    p.add_argument("--set", required=True)
    p.add_argument("--fw-plain")
    p.add_argument("--voxq-plain")
    p.add_argument("--show-diffs", action="store_true")
    p.add_argument("fw_words")
    p.add_argument("voxq_words")
    p.set_defaults(func=compare)
    args = ap.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
