#!/usr/bin/env python3
"""Parity and accuracy of voxq against faster-whisper on the fixture voice notes.

    compare.py TRANSCRIPTS_TSV REFERENCE_JSONL VOXQ_JSONL

Prints, per file, whether voxq's transcript equals faster-whisper's word for word, and
both systems' word error rate against the spoken text; then the corpus figures:
exact-match share (goal >= 90%) and corpus WER (voxq <= faster-whisper + 1 point).
Exits 1 if either acceptance check fails.
"""
import json
import os
import re
import sys

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)


def normalise(text: str) -> list:
    """Lower case, digits to words (times like 3:30 -> three thirty), no punctuation."""
    t = text.lower().replace("%", " percent")
    t = re.sub(r"(\d+):(\d\d)", lambda m: f"{m.group(1)} {int(m.group(2)) or ''}", t)
    t = re.sub(r"(\d+)\.(\d+)", r"\1 \2", t)
    t = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", t)
    t = t.replace("o'clock", "o clock")
    t = re.sub(r"\bmr\b\.?", "mister", t)
    t = re.sub(r"[^a-z' ]+", " ", t).replace("'", "")
    return t.split()


def edits(ref: list, hyp: list) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def load(path: str) -> dict:
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                out[os.path.basename(o["file"])] = o.get("text") or ""
    return out


def main() -> int:
    tsv, ref_path, ours_path = sys.argv[1:4]
    spoken = {}
    with open(tsv) as f:
        next(f)
        for line in f:
            name, text = line.rstrip("\n").split("\t", 1)
            spoken[name] = text
    ref, ours = load(ref_path), load(ours_path)
    same = 0
    n_words = e_ref = e_ours = 0
    print(f"{'file':32} {'same':5} {'wer_fw':>7} {'wer_voxq':>8}")
    for name in sorted(spoken):
        truth = normalise(spoken[name])
        a, b = ref.get(name, ""), ours.get(name, "")
        equal = a.split() == b.split()
        same += equal
        ea, eb = edits(truth, normalise(a)), edits(truth, normalise(b))
        n_words += len(truth)
        e_ref += ea
        e_ours += eb
        print(f"{name:32} {'yes' if equal else 'NO':5} {ea / len(truth):7.3f} {eb / len(truth):8.3f}")
        if not equal:
            print(f"    faster-whisper: {a}\n    voxq:           {b}")
    share = same / len(spoken)
    wer_ref, wer_ours = e_ref / n_words, e_ours / n_words
    print(f"word-for-word equal: {same}/{len(spoken)} = {share:.0%} (required >= 90%)")
    print(f"corpus WER: faster-whisper {wer_ref:.2%}, voxq {wer_ours:.2%} (required <= {wer_ref + 0.01:.2%})")
    ok = share >= 0.9 and wer_ours <= wer_ref + 0.01
    print("parity: PASS" if ok else "parity: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
