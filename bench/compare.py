#!/usr/bin/env python3
"""Parity and accuracy of voxq against faster-whisper on a set of voice notes.

    compare.py [--multilingual] [--brief] TRANSCRIPTS_TSV REFERENCE_JSONL VOXQ_JSONL
    compare.py --wer [--multilingual] TRANSCRIPTS_TSV JSONL   (one system's corpus WER only)

Prints, per file, whether voxq's transcript equals faster-whisper's word for word, and
both systems' word error rate against the spoken text; then the corpus figures.

The gate (issue 13): parity PASS iff voxq's corpus WER against the spoken text is at most
faster-whisper's + 1 point (0.01) on the set. Word-for-word agreement is printed, not
gated: read it next to the noise floor bench/run.sh prints (faster-whisper against
itself). Exits 1 on FAIL.

Tokenisation: English sets (the default) use the English normaliser (lower case, digits
to number words, no punctuation). --multilingual takes each file's language from its name
prefix (`cs-1.ogg` -> cs); English files keep the English normaliser, the others are
NFKC + casefold, ' and ’ dropped, words = runs of Unicode letters and digits (Cyrillic
and diacritics are letters). It then also prints WER per language and detected-language
agreement of voxq with faster-whisper (and with the file's language).

--brief prints only the files where the two systems' WER differ most (for large sets).
"""
import json
import os
import re
import statistics
import sys
import unicodedata

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
    """English: lower case, digits to words (times like 3:30 -> three thirty), no punctuation."""
    t = text.lower().replace("%", " percent")
    t = re.sub(r"(\d+):(\d\d)", lambda m: f"{m.group(1)} {int(m.group(2)) or ''}", t)
    t = re.sub(r"(\d+)\.(\d+)", r"\1 \2", t)
    t = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", t)
    t = t.replace("o'clock", "o clock")
    t = re.sub(r"\bmr\b\.?", "mister", t)
    t = re.sub(r"[^a-z' ]+", " ", t).replace("'", "")
    return t.split()


def tokens_unicode(text: str) -> list:
    """Any language: NFKC, casefold, apostrophes dropped, runs of letters/digits."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = t.replace("'", "").replace("\u2019", "")
    return re.findall(r"[^\W_]+", t)


def edits(ref: list, hyp: list) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def load(path: str) -> dict:
    """file name -> the JSON line (text null on an error)."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                out[os.path.basename(o["file"])] = o
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


def language_of(name: str) -> str:
    return name.split("-", 1)[0].split(".", 1)[0]


def text_of(o) -> str:
    return (o or {}).get("text") or ""


def tokenise(name: str, text: str, multilingual: bool) -> list:
    if multilingual and language_of(name) != "en":
        return tokens_unicode(text)
    return normalise(text)


def wer_only(tsv: str, path: str, multilingual: bool) -> int:
    spoken, got = read_tsv(tsv), load(path)
    n = e = 0
    for name, truth in spoken.items():
        t = tokenise(name, truth, multilingual)
        n += len(t)
        e += edits(t, tokenise(name, text_of(got.get(name)), multilingual))
    print(f"corpus WER: {e / n:.2%} ({len(spoken)} files, {n} words)")
    return 0


def main(argv: list) -> int:
    multilingual = "--multilingual" in argv
    brief = "--brief" in argv
    if "--wer" in argv:
        rest = [a for a in argv if not a.startswith("--")]
        return wer_only(rest[0], rest[1], multilingual)
    tsv, ref_path, ours_path = [a for a in argv if not a.startswith("--")][:3]
    spoken = read_tsv(tsv)
    ref, ours = load(ref_path), load(ours_path)

    def tok(name: str, text: str) -> list:
        return tokenise(name, text, multilingual)

    rows = []  # name, lang, n_words, e_fw, e_voxq, equal
    for name in sorted(spoken):
        truth = tok(name, spoken[name])
        a, b = text_of(ref.get(name)), text_of(ours.get(name))
        rows.append((name, language_of(name), len(truth), edits(truth, tok(name, a)),
                     edits(truth, tok(name, b)), a.split() == b.split(), a, b))

    def per_file(r):
        name, _, n, ea, eb, equal, a, b = r
        print(f"{name:32} {'yes' if equal else 'NO':5} {ea / n:7.3f} {eb / n:8.3f}")
        if not equal:
            print(f"    faster-whisper: {a}\n    voxq:           {b}")

    print(f"{'file':32} {'same':5} {'wer_fw':>7} {'wer_voxq':>8}")
    if brief:
        worst = sorted(rows, key=lambda r: (r[4] - r[3]) / r[2], reverse=True)[:8]
        for r in worst:
            if r[4] != r[3] or not r[5]:
                per_file(r)
        print(f"(--brief: of the 8 files where voxq's WER minus faster-whisper's is largest, those that differ;"
              f" {len(rows)} files in all)")
    else:
        for r in rows:
            per_file(r)

    same = sum(r[5] for r in rows)
    n_words = sum(r[2] for r in rows)
    e_ref = sum(r[3] for r in rows)
    e_ours = sum(r[4] for r in rows)
    missing = [n for n in spoken if n not in ours or text_of(ours.get(n)) == "" and ours[n].get("error")]
    if missing:
        print(f"voxq returned no transcript for {len(missing)} file(s): {', '.join(sorted(missing)[:10])}")

    if multilingual:
        print(f"{'language':8} {'files':>5} {'words':>5} {'wer_fw':>7} {'wer_voxq':>8} {'same':>5}")
        for lang in sorted({r[1] for r in rows}):
            rs = [r for r in rows if r[1] == lang]
            n = sum(r[2] for r in rs)
            print(f"{lang:8} {len(rs):5} {n:5} {sum(r[3] for r in rs) / n:7.2%} {sum(r[4] for r in rs) / n:8.2%}"
                  f" {sum(r[5] for r in rs):2}/{len(rs)}")
        agree = right_fw = right_vx = 0
        dps = []
        print(f"{'file':32} {'lang':4} {'fw':>10} {'voxq':>10}")
        for name in sorted(spoken):
            o_fw, o_vx = ref.get(name) or {}, ours.get(name) or {}
            lf, lv = o_fw.get("language"), o_vx.get("language")
            pf, pv = o_fw.get("language_probability"), o_vx.get("language_probability")
            agree += lf is not None and lf == lv
            right_fw += lf == language_of(name)
            right_vx += lv == language_of(name)
            if pf is not None and pv is not None:
                dps.append(abs(pf - pv))
            fmt = lambda lang, p: f"{lang or '-'} {p:.2f}" if p is not None else f"{lang or '-'}"  # noqa: E731
            mark = "" if lf == lv else "  <- differs"
            print(f"{name:32} {language_of(name):4} {fmt(lf, pf):>10} {fmt(lv, pv):>10}{mark}")
        m = len(spoken)
        print(f"detected language, voxq = faster-whisper: {agree}/{m}; "
              f"= the file's language: faster-whisper {right_fw}/{m}, voxq {right_vx}/{m}")
        if dps:
            print(f"language probability |voxq - faster-whisper|: median {statistics.median(dps):.4f}, "
                  f"max {max(dps):.4f} ({len(dps)} files)")
        else:
            print("language probability: not in voxq's output (no `language_probability` field)")

    wer_ref, wer_ours = e_ref / n_words, e_ours / n_words
    print(f"word-for-word equal: {same}/{len(rows)} = {same / len(rows):.0%} "
          f"(not a gate: read it against faster-whisper's noise floor)")
    print(f"corpus WER: faster-whisper {wer_ref:.2%}, voxq {wer_ours:.2%} (required <= {wer_ref + 0.01:.2%})")
    ok = wer_ours <= wer_ref + 0.01 + 1e-12
    print("parity: PASS" if ok else "parity: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
