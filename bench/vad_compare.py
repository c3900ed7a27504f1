#!/usr/bin/env python3
"""Silero VAD of voxq against faster-whisper's, and what vad_filter does to transcripts
(bench/vad.sh drives it).

    vad_compare.py fw-vad [--probs] [--pcm-dir DIR] FILE...
        faster-whisper 1.2.1's decode_audio + get_speech_timestamps (default VadOptions)
        and its speech probabilities, one JSON object per file in the shape of
        `voxq-worker vad --probs`: {"file", "speech": [[start, end], ...] (16 kHz samples),
        "probs": [...]}. --pcm-dir also writes the decoded signal as raw 16 kHz mono f32le
        (DIR/<file name>.f32), so voxq can be fed the very same samples
        (`voxq-worker vad --f32le`). Needs the venv.
    vad_compare.py agree --label L FW_JSONL VOXQ_JSONL
        Per file: chunk counts, max/median |Δ| (ms) of chunk starts and ends, max |Δp|;
        then totals and the gate of the engine notes (docs/research/issue13-engine.md
        §2.6) with --gate: identical chunks and max |Δp| <= 1e-4 (meaningful when both
        engines saw the same samples).
    vad_compare.py halluc --tsv TSV --run LABEL=JSONL ... FILE...
        Edge fixtures transcribed with and without vad_filter: text, words and WER
        against the spoken text (the source note of each edge file; silence: none).
    vad_compare.py wer --tsv TSV --run LABEL=JSONL ... [--pair ENGINE:OFF_LABEL:ON_LABEL ...]
        Corpus WER of each run over the files of TSV; each pair checks that vad_filter
        loses no words: WER(on) <= WER(off) + 1 point.
    vad_compare.py make-long --seconds N --out WAV --text TXT [--seed S] NOTE...
        The voice notes in a loop with 3-10 s of near-silent noise (-66 dBFS peak, the
        level of fixtures/edge/silence-3s.wav) between them, N seconds of 16 kHz mono s16;
        TXT gets the spoken text in order. Needs numpy (the venv) and ffmpeg.
    vad_compare.py long-wer TXT JSONL
        Prints "wer=<x> ref_words=<n> hyp_words=<m>" of a long-audio transcript.

English WER uses bench/compare.py's normalise (numbers as words).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import edits, normalise  # noqa: E402  (same directory)

SR = 16000
# The spoken text of each edge fixture: the voice note it was made from (fixtures/README.md,
# scripts/make-fixtures.sh, scripts/make-silence-padded.sh); "" = nothing is spoken.
# short-0.5s.ogg is left out: it holds a fragment of a word.
EDGE_SOURCE = {
    "clipped.wav": "09-parking.flac",
    "noisy.wav": "09-parking.flac",
    "quiet.wav": "09-parking.flac",
    "silence-3s.wav": "",
    "silence-padded.ogg": "02-call-me-back.wav",
}


def load_jsonl(path: str) -> dict:
    """file name -> result; raw samples written by `fw-vad --pcm-dir` (NAME.f32) count as
    the file NAME they were decoded from."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                o = json.loads(line)
                if "file" in o:
                    name = os.path.basename(o["file"])
                    out[name[:-4] if name.endswith(".f32") else name] = o
    return out


def read_tsv(path: str) -> dict:
    spoken = {}
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            if line.strip():
                name, text = line.rstrip("\n").split("\t", 1)
                spoken[name] = text
    return spoken


# ---------------------------------------------------------------- fw-vad


def fw_vad(args) -> int:
    import numpy as np
    from faster_whisper.audio import decode_audio
    from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

    for f in args.files:
        try:
            audio = decode_audio(f, sampling_rate=SR)
            chunks = get_speech_timestamps(audio, VadOptions(), sampling_rate=SR)
            out = {"file": f, "samples": int(audio.shape[0]),
                   "speech": [[int(c["start"]), int(c["end"])] for c in chunks], "error": None}
            if args.probs:
                # As get_speech_timestamps computes them (vad.py): padded to a multiple of
                # 512 (a whole extra window when already a multiple), one prob per window.
                padded = np.pad(audio, (0, 512 - audio.shape[0] % 512))
                out["probs"] = [float(p) for p in np.asarray(get_vad_model()(padded)).reshape(-1)]
            if args.pcm_dir:
                path = os.path.join(args.pcm_dir, os.path.basename(f) + ".f32")
                audio.astype("<f4").tofile(path)
        except Exception as e:  # a bad file must not stop the run
            out = {"file": f, "speech": None, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------- agree


def ms(samples: float) -> float:
    return samples * 1000.0 / SR


def pair_chunks(a: list, b: list) -> list:
    """Pairs of chunks: by index when the counts are equal, else each of a with the chunk
    of b it overlaps most (chunks without overlap stay unpaired)."""
    if len(a) == len(b):
        return list(zip(a, b))
    pairs = []
    for ca in a:
        best, best_ov = None, 0
        for cb in b:
            ov = min(ca[1], cb[1]) - max(ca[0], cb[0])
            if ov > best_ov:
                best, best_ov = cb, ov
        if best is not None:
            pairs.append((ca, best))
    return pairs


def agree(args) -> int:
    fw, vx = load_jsonl(args.fw), load_jsonl(args.voxq)
    tag = f"VAD AGREEMENT [{args.label}]"
    print(f"{tag} per file: chunks fw/voxq  equal  |dstart| max/med ms  |dend| max/med ms  max|dp|  windows fw/voxq")
    n_files = n_equal = n_identical = 0
    all_ds, all_de, max_dp = [], [], 0.0
    for name in sorted(set(fw) | set(vx)):
        a, b = fw.get(name, {}), vx.get(name, {})
        if a.get("speech") is None or b.get("speech") is None:
            print(f"  {name:34} no result: fw {a.get('error') if a else 'missing'}; "
                  f"voxq {b.get('error') if b else 'missing'}")
            continue
        n_files += 1
        sa, sb = a["speech"], b["speech"]
        equal = len(sa) == len(sb)
        n_equal += equal
        n_identical += [list(c) for c in sa] == [list(c) for c in sb]
        pairs = pair_chunks(sa, sb)
        ds = [ms(abs(x[0] - y[0])) for x, y in pairs]
        de = [ms(abs(x[1] - y[1])) for x, y in pairs]
        all_ds += ds
        all_de += de
        pa, pb = a.get("probs"), b.get("probs")
        if pa is not None and pb is not None and min(len(pa), len(pb)) > 0:
            dp = max(abs(x - y) for x, y in zip(pa, pb))
            max_dp = max(max_dp, dp)
            dp_s, win = f"{dp:.2e}", f"{len(pa)}/{len(pb)}"
        else:
            dp_s, win = "-", "-"

        def mm(v):
            return f"{max(v):7.0f}/{statistics.median(v):<6.0f}" if v else f"{'-':>7}/{'-':<6}"

        print(f"  {name:34} {len(sa):3}/{len(sb):<3}  {'yes' if equal else 'NO ':5} {mm(ds)}   {mm(de)}    {dp_s:>8}  {win}")
    if n_files == 0:
        print(f"{tag}: no file with results from both engines")
        return 1
    print(f"{tag}: {n_files} files; chunk count equal in {n_equal}/{n_files}, chunks identical in {n_identical}/{n_files}")
    if all_ds:
        print(f"{tag}: |dstart| max {max(all_ds):.0f} ms, median {statistics.median(all_ds):.0f} ms; "
              f"|dend| max {max(all_de):.0f} ms, median {statistics.median(all_de):.0f} ms (over {len(all_ds)} paired chunks)")
    print(f"{tag}: max |dp| over all windows {max_dp:.2e}")
    if not args.gate:
        return 0
    ok = n_identical == n_files and max_dp <= 1e-4
    print(f"{tag}: gate (identical chunks on every file, max |dp| <= 1e-4): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


# ---------------------------------------------------------------- halluc, wer


def runs_arg(items: list) -> list:
    out = []
    for item in items:
        label, path = item.split("=", 1)
        out.append((label, load_jsonl(path) if os.path.exists(path) else None))
    return out


def short(text: str, n: int = 110) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= n else text[: n - 1] + "…", ensure_ascii=False)


def halluc(args) -> int:
    spoken = read_tsv(args.tsv)
    runs = runs_arg(args.run)
    print(f"VAD HALLUCINATION [{args.label}]: edge fixtures, expected = the note each was made from (silence: nothing)")
    print(f"  {'file':20} {'run':24} {'words':>5} {'WER':>6} {'start_s':>7}  text   (start_s: first segment's start)")
    totals = {label: [0, 0] for label, _ in runs}  # label -> [words on silence files, edit errors]
    for f in args.files:
        name = os.path.basename(f)
        if name not in EDGE_SOURCE:
            continue
        src = EDGE_SOURCE[name]
        truth = normalise(spoken[src]) if src else []
        print(f"  {name:20} {'(spoken)':24} {len(truth):5} {'':6} {'':7}  {short(spoken[src]) if src else '(nothing)'}")
        for label, res in runs:
            if res is None:
                print(f"  {'':20} {label:24} n/a (not run)")
                continue
            o = res.get(name)
            if o is None or o.get("error"):
                print(f"  {'':20} {label:24} error: {o.get('error') if o else 'missing'}")
                continue
            hyp = normalise(o.get("text") or "")
            e = edits(truth, hyp)
            totals[label][1] += e
            if not truth:
                totals[label][0] += len(hyp)
            wer = f"{e / len(truth):6.3f}" if truth else f"{'-':>6}"
            segs = o.get("segments") or []
            start = f"{segs[0]['start']:7.2f}" if segs else f"{'-':>7}"
            print(f"  {'':20} {label:24} {len(hyp):5} {wer} {start}  {short(o.get('text') or '')}")
    for label, res in runs:
        if res is None:
            print(f"VAD HALLUCINATION [{args.label}] {label}: n/a (not run)")
            continue
        silence_words, errors = totals[label]
        print(f"VAD HALLUCINATION [{args.label}] {label}: words on nothing-spoken files {silence_words}, "
              f"word errors over the table {errors}")
    return 0


def corpus_wer(spoken: dict, res: dict) -> tuple:
    n = e = 0
    for name, text in spoken.items():
        truth = normalise(text)
        o = res.get(name) or {}
        e += edits(truth, normalise(o.get("text") or ""))
        n += len(truth)
    return e, n


def wer(args) -> int:
    spoken = read_tsv(args.tsv)
    runs = dict(runs_arg(args.run))
    for label, res in runs.items():
        if res is None:
            print(f"VAD WER [{args.label}] {label}: n/a (not run)")
            continue
        e, n = corpus_wer(spoken, res)
        print(f"VAD WER [{args.label}] {label}: {e}/{n} = {e / n:.2%}")
    rc = 0
    for pair in args.pair or []:
        engine, off, on = pair.split(":")
        if runs.get(off) is None or runs.get(on) is None:
            print(f"VAD WER [{args.label}] {engine}: vad_filter loses no words: n/a")
            continue
        (e0, n), (e1, _) = corpus_wer(spoken, runs[off]), corpus_wer(spoken, runs[on])
        ok = e1 / n <= e0 / n + 0.01
        rc |= not ok
        print(f"VAD WER [{args.label}] {engine}: WER with VAD {e1 / n:.2%} <= without {e0 / n:.2%} + 1 pt: "
              f"{'PASS' if ok else 'FAIL'}")
    return rc


# ---------------------------------------------------------------- long audio


def make_long(args) -> int:
    import wave

    import numpy as np

    spoken = read_tsv(args.tsv)
    rng = np.random.default_rng(args.seed)
    notes = []
    for f in args.notes:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", f, "-ac", "1", "-ar", str(SR), "-f", "s16le", "-"],
                             capture_output=True, check=True).stdout
        notes.append((os.path.basename(f), np.frombuffer(raw, dtype=np.int16)))
    total = int(args.seconds * SR)
    out = np.zeros(total, dtype=np.int16)
    # Near-silence everywhere (uniform, peak 0.0005 of full scale), speech written over it.
    out[:] = np.round(rng.uniform(-0.0005, 0.0005, total) * 32767).astype(np.int16)
    pos, i, texts, n_notes = int(rng.uniform(3, 10) * SR), 0, [], 0
    while True:
        name, pcm = notes[i % len(notes)]
        if pos + len(pcm) > total:
            break
        out[pos:pos + len(pcm)] = pcm
        texts.append(spoken[name])
        n_notes += 1
        pos += len(pcm) + int(rng.uniform(3, 10) * SR)
        i += 1
    with wave.open(args.out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(out.tobytes())
    with open(args.text, "w", encoding="utf-8") as f:
        f.write(" ".join(texts) + "\n")
    speech_s = sum(len(p) for _, p in notes[:n_notes]) / SR if n_notes <= len(notes) else None
    words = len(normalise(" ".join(texts)))
    print(f"{args.seconds:g} s, {n_notes} notes in a loop of the {len(notes)} fixtures, {words} spoken words, "
          f"seed {args.seed}" + (f", {speech_s:.0f} s of speech" if speech_s else ""))
    return 0


def long_wer(args) -> int:
    with open(args.text, encoding="utf-8") as f:
        truth = normalise(f.read())
    res = list(load_jsonl(args.jsonl).values())
    hyp = normalise((res[0].get("text") or "") if res else "")
    e = edits(truth, hyp)
    print(f"wer={e / len(truth):.4f} ref_words={len(truth)} hyp_words={len(hyp)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fw-vad")
    p.add_argument("--probs", action="store_true")
    p.add_argument("--pcm-dir")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=fw_vad)
    p = sub.add_parser("agree")
    p.add_argument("--label", required=True)
    p.add_argument("--gate", action="store_true", help="print the gate line (same samples only)")
    p.add_argument("fw")
    p.add_argument("voxq")
    p.set_defaults(func=agree)
    p = sub.add_parser("halluc")
    p.add_argument("--label", required=True)
    p.add_argument("--tsv", required=True)
    p.add_argument("--run", action="append", required=True)
    p.add_argument("files", nargs="+")
    p.set_defaults(func=halluc)
    p = sub.add_parser("wer")
    p.add_argument("--label", required=True)
    p.add_argument("--tsv", required=True)
    p.add_argument("--run", action="append", required=True)
    p.add_argument("--pair", action="append")
    p.set_defaults(func=wer)
    p = sub.add_parser("make-long")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--tsv", required=True)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("notes", nargs="+")
    p.set_defaults(func=make_long)
    p = sub.add_parser("long-wer")
    p.add_argument("text")
    p.add_argument("jsonl")
    p.set_defaults(func=long_wer)
    args = ap.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
