#!/usr/bin/env bash
# Speed and parity benchmark: voxq-worker vs faster-whisper 1.2.1 (PyPI), measured in the
# same run on the same machine.
#
#   bench/run.sh [ROUNDS]      (default 3 rounds; the best round of each configuration counts)
#   BENCH_BULK_N=40 bench/run.sh 1          a quick run
#
# Sets: voice (fixtures/voice, 14 espeak-ng notes), human (CMU/LibriVox clips, see
# bench/human-speech.sh), multilingual (fixtures/multilingual, base model, language
# detected) and bulk (BENCH_BULK_N notes of 1-60 s in the ten fixture encodings, made by
# `scripts/make-fixtures.sh --bulk`, cached in ~/.cache/voxq-bulk-notes).
#
# 1. Throughput matrix, on voice and bulk, with tiny.en and base: faster-whisper sequential
#    (`transcribe()` one file after another), BatchedInferencePipeline with batch_size 4
#    and 8 (its own defaults: VAD on, no timestamps), and voxq (its defaults: one
#    single-threaded replica per core). Same model dir, int8, all cores, one process per
#    configuration with start-up and model load included. English sets on the
#    multilingual base model run with language "en" on both sides (BENCH_BASE_LANGUAGE=auto
#    to detect instead). Ratio = voxq throughput / the best faster-whisper configuration's;
#    goal >= 1.3. Every figure carries the CPU model and faster-whisper's CTranslate2
#    backend (MKL on Intel, oneDNN elsewhere: the ratio depends on it).
# 2. Parity on every set (bench/compare.py): PASS iff voxq's corpus WER against the spoken
#    text <= faster-whisper's (sequential, default options) + 1 point. Word-for-word
#    agreement is printed next to its noise floor: faster-whisper against itself when 1%
#    of its float32 log-mel values move by one ULP and, on voice, when only its CPU
#    kernels change (AVX vs AVX2). The multilingual set adds WER per language and
#    detected-language agreement.
# 3. Decode + resample to 16 kHz mono, x realtime per format, against ffmpeg.
# 4. bench/words.sh, vad.sh, latency.sh, rss.sh when present (BENCH_EXTRAS selects them;
#    empty skips them). They get BENCH_VENV, BENCH_WORKER, BENCH_TINY_MODEL,
#    BENCH_BASE_MODEL and BENCH_THREADS from here.
# Last line: every set's parity PASS/FAIL and every throughput ratio. Exit 1 if a parity
# check fails.
#
# Environment: BENCH_BULK_N (200), BENCH_BULK_DIR (~/.cache/voxq-bulk-notes), BENCH_VENV
# (~/.cache/voxq-bench-venv, faster-whisper==1.2.1 installed if missing), BENCH_WORKER
# (the dev build), BENCH_TINY_MODEL (models/whisper-tiny.en), BENCH_BASE_MODEL
# (VOXQ_BASE_MODEL_DIR or models/whisper-base), BENCH_THREADS (faster-whisper's
# cpu_threads, all cores), BENCH_BASE_LANGUAGE (en), BENCH_EXTRAS ("words vad latency rss").
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
fw_version=1.2.1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}"
export BENCH_VENV=${BENCH_VENV:-$HOME/.cache/voxq-bench-venv}
export BENCH_WORKER=${BENCH_WORKER:-$CARGO_TARGET_DIR/debug/voxq-worker}
export BENCH_TINY_MODEL=${BENCH_TINY_MODEL:-models/whisper-tiny.en}
export BENCH_BASE_MODEL=${BENCH_BASE_MODEL:-${VOXQ_BASE_MODEL_DIR:-models/whisper-base}}
export BENCH_THREADS=${BENCH_THREADS:-$(nproc)}
venv=$BENCH_VENV
worker=$BENCH_WORKER
threads=$BENCH_THREADS
bulk_n=${BENCH_BULK_N:-200}
bulk_dir=${BENCH_BULK_DIR:-$HOME/.cache/voxq-bulk-notes}
base_language=${BENCH_BASE_LANGUAGE:-en}
extras=${BENCH_EXTRAS-words vad latency rss}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if ! "$venv/bin/python" -c "import faster_whisper, sys; sys.exit(faster_whisper.__version__ != '$fw_version')" 2>/dev/null; then
  echo "installing faster-whisper==$fw_version into $venv (benchmarks only)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "faster-whisper==$fw_version"
fi
[ -f "$BENCH_TINY_MODEL/model.bin" ] || scripts/fetch-model.sh tiny.en "$BENCH_TINY_MODEL" >&2
[ -f "$BENCH_BASE_MODEL/model.bin" ] || scripts/fetch-model.sh base "$BENCH_BASE_MODEL" >&2
[ -x "$worker" ] || cargo build -p voxq-worker
bulk_dir=$(scripts/make-fixtures.sh --bulk "$bulk_dir" "$bulk_n")

# ------------------------------------------------------------------ what runs where
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
ct2_backend() { # the lines CTranslate2 logs at start-up about its CPU kernels
  CT2_VERBOSE=1 "$@" 2>&1 | grep -oE "Selected ISA: [A-Z0-9_]+|Use Intel MKL: [a-z]+|GEMM_S8 backend: [A-Za-z]+" |
    sort -u | paste -sd, - | sed 's/,/, /g' || true
}
peer="faster-whisper $fw_version, CTranslate2 $("$venv/bin/python" -c 'import ctranslate2; print(ctranslate2.__version__)')"
peer="$peer ($(ct2_backend "$venv/bin/python" -c 'import sys, ctranslate2; ctranslate2.models.Whisper(sys.argv[1], compute_type="int8")' "$BENCH_TINY_MODEL"))"
ours=$(ct2_backend "$worker" transcribe --model-dir "$BENCH_TINY_MODEL" --workers 1 fixtures/voice/02-call-me-back.wav || true)
ours="voxq (CTranslate2 in ct2rs: ${ours:-backend not logged})"
hw="CPU: $cpu, $(nproc) cores; $peer; $ours"
echo "== $hw"

# files_of TSV DIR [N]: the first N (all) files listed in a transcripts.tsv, as paths.
files_of() {
  tail -n +2 "$1" | head -n "${3:-1000000}" | cut -f1 | sed "s|^|$2/|"
}
audio_seconds() {
  local f total=0 d
  for f in "$@"; do
    d=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$f")
    total=$(awk -v a="$total" -v b="$d" 'BEGIN { print a + b }')
  done
  printf '%.1f' "$total"
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
fw() { # fw OUT ARGS...: faster-whisper, its stderr kept for a failure report
  local o=$1; shift
  "$venv/bin/python" bench/fw_transcribe.py --threads "$threads" "$@" > "$o" 2> "$o.err" ||
    { echo "faster-whisper failed: $(tail -3 "$o.err")" >&2; return 1; }
}
vx() { # vx OUT ARGS...
  local o=$1; shift
  "$worker" transcribe --format jsonl "$@" > "$o" 2> "$o.err" ||
    { echo "voxq failed: $(tail -3 "$o.err")" >&2; return 1; }
}
lang_args() { # lang_args MODEL_LABEL SET: --language for English sets on the base model
  if [ "$1" = base ] && [ "$2" != multilingual ] && [ "$base_language" != auto ]; then
    echo "--language $base_language"
  fi
}

summary_parity=()
summary_speed=()
fail=0

# ------------------------------------------------------------------ throughput matrix
# throughput SET TSV LABEL MODEL FILE...: best-of-$rounds wall time of each configuration
# over FILE... in one process each; leaves the last round's outputs in $out/SET.LABEL.*.jsonl.
throughput() {
  local set=$1 tsv=$2 label=$3 model=$4; shift 4
  local configs=(fw-seq fw-b4 fw-b8 voxq) audio_s r c t t0 t1 line
  # shellcheck disable=SC2207
  local lang=($(lang_args "$label" "$set"))
  declare -A best=()
  audio_s=$(audio_seconds "$@")
  echo
  echo "== throughput [$set, $label]: $# files, $audio_s s of audio, $rounds rounds${lang[*]:+, ${lang[*]}}"
  for r in $(seq "$rounds"); do
    line="round $r:"
    for c in "${configs[@]}"; do
      local o="$out/$set.$label.$c.jsonl"
      t0=$(now)
      case $c in
        fw-seq) fw "$o" --model-dir "$model" "${lang[@]}" "$@" ;;
        fw-b4) fw "$o" --model-dir "$model" --batched 4 "${lang[@]}" "$@" ;;
        fw-b8) fw "$o" --model-dir "$model" --batched 8 "${lang[@]}" "$@" ;;
        voxq) vx "$o" --model-dir "$model" "${lang[@]}" "$@" ;;
      esac
      t1=$(now)
      t=$(elapsed "$t0" "$t1")
      line="$line $c $t s,"
      if [ -z "${best[$c]:-}" ] || awk -v a="$t" -v b="${best[$c]}" 'BEGIN { exit !(a < b) }'; then
        best[$c]=$t
      fi
    done
    echo "${line%,}"
  done
  local fw_best="" fw_cfg=""
  printf '%-8s %8s %9s %8s\n' config best_s x_realtime WER
  for c in "${configs[@]}"; do
    local wer
    wer=$(python3 bench/compare.py --wer "$tsv" "$out/$set.$label.$c.jsonl" | sed -n 's/^corpus WER: \([^ ]*\).*/\1/p')
    printf '%-8s %8.2f %9.1f %8s\n' "$c" "${best[$c]}" "$(awk -v a="$audio_s" -v b="${best[$c]}" 'BEGIN { print a / b }')" "$wer"
    if [ "$c" != voxq ] && { [ -z "$fw_best" ] || awk -v a="${best[$c]}" -v b="$fw_best" 'BEGIN { exit !(a < b) }'; }; then
      fw_best=${best[$c]}
      fw_cfg=$c
    fi
  done
  local ratio
  ratio=$(awk -v a="$fw_best" -v b="${best[voxq]}" 'BEGIN { printf "%.2f", a / b }')
  echo "THROUGHPUT RATIO [$set, $label] voxq / best faster-whisper ($fw_cfg): ${ratio}x (goal >= 1.3) | $hw"
  summary_speed+=("$set/$label ${ratio}x vs $fw_cfg")
}

# ------------------------------------------------------------------ parity
# noise_floor SET LABEL MODEL TSV FW_JSONL FILE...: faster-whisper against itself.
noise_floor() {
  local set=$1 label=$2 model=$3 tsv=$4 fw_out=$5; shift 5
  local fw_flags=() cmp_flags=() lang
  # shellcheck disable=SC2207
  lang=($(lang_args "$label" "$set"))
  if [ "$set" = multilingual ]; then
    fw_flags=(--language-probs)
    cmp_flags=(--multilingual)
  fi
  echo "-- noise floor [$set, $label]: faster-whisper against itself"
  fw "$out/$set.$label.fw-ulp.jsonl" --model-dir "$model" "${lang[@]}" "${fw_flags[@]}" --perturb-ulp 0.01 "$@"
  python3 bench/compare.py "${cmp_flags[@]}" "$tsv" "$fw_out" "$out/$set.$label.fw-ulp.jsonl" |
    grep -E "word-for-word" | sed 's/ (not a gate.*//; s/^/faster-whisper vs itself, 1% of features +-1 ULP: /' || true
  if [ "$set" = voice ]; then
    CT2_FORCE_CPU_ISA=AVX fw "$out/$set.$label.fw-avx.jsonl" --model-dir "$model" "${lang[@]}" "$@"
    python3 bench/compare.py "$tsv" "$fw_out" "$out/$set.$label.fw-avx.jsonl" |
      grep -E "word-for-word" | sed 's/ (not a gate.*//; s/^/faster-whisper vs itself, AVX2 vs AVX kernels: /' || true
  fi
}

# parity SET LABEL TSV FW_JSONL VOXQ_JSONL [compare.py flags...]
parity() {
  local set=$1 label=$2 tsv=$3 fw_out=$4 vx_out=$5; shift 5
  echo "-- parity [$set, $label]: voxq against this run's faster-whisper"
  if python3 bench/compare.py "$@" "$tsv" "$fw_out" "$vx_out" > "$out/compare.txt"; then
    summary_parity+=("$set/$label PASS")
  else
    summary_parity+=("$set/$label FAIL")
    fail=1
  fi
  cat "$out/compare.txt"
}

voice_tsv=fixtures/voice/transcripts.tsv
mapfile -t voice < <(files_of "$voice_tsv" fixtures/voice)
ml_tsv=fixtures/multilingual/transcripts.tsv
mapfile -t multilingual < <(files_of "$ml_tsv" fixtures/multilingual)
head -n $((bulk_n + 1)) "$bulk_dir/transcripts.tsv" > "$out/bulk.tsv"
mapfile -t bulk < <(files_of "$out/bulk.tsv" "$bulk_dir")
bulk_set=bulk$bulk_n
human=$(bench/human-speech.sh)
mapfile -t human_files < <(files_of "$human/transcripts.tsv" "$human")

for label in tiny.en base; do
  model=$BENCH_TINY_MODEL
  [ "$label" = base ] && model=$BENCH_BASE_MODEL

  echo
  echo "################ $label ($model)"
  throughput voice "$voice_tsv" "$label" "$model" "${voice[@]}"
  echo
  echo "== parity [voice, $label]"
  noise_floor voice "$label" "$model" "$voice_tsv" "$out/voice.$label.fw-seq.jsonl" "${voice[@]}"
  parity voice "$label" "$voice_tsv" "$out/voice.$label.fw-seq.jsonl" "$out/voice.$label.voxq.jsonl"

  # Real human speech (CMU/LibriVox clips from a PyPI source release, see the script).
  echo
  echo "== parity [human, $label]: ${#human_files[@]} clips"
  # shellcheck disable=SC2046
  fw "$out/human.$label.fw.jsonl" --model-dir "$model" $(lang_args "$label" human) "${human_files[@]}"
  # shellcheck disable=SC2046
  vx "$out/human.$label.voxq.jsonl" --model-dir "$model" $(lang_args "$label" human) "${human_files[@]}"
  noise_floor human "$label" "$model" "$human/transcripts.tsv" "$out/human.$label.fw.jsonl" "${human_files[@]}"
  parity human "$label" "$human/transcripts.tsv" "$out/human.$label.fw.jsonl" "$out/human.$label.voxq.jsonl"

  if [ "$label" = base ]; then
    echo
    echo "== parity [multilingual, base]: ${#multilingual[@]} notes, language detected by each engine"
    fw "$out/multilingual.base.fw.jsonl" --model-dir "$model" --language-probs "${multilingual[@]}"
    vx "$out/multilingual.base.voxq.jsonl" --model-dir "$model" "${multilingual[@]}"
    noise_floor multilingual base "$model" "$ml_tsv" "$out/multilingual.base.fw.jsonl" "${multilingual[@]}"
    parity multilingual base "$ml_tsv" "$out/multilingual.base.fw.jsonl" "$out/multilingual.base.voxq.jsonl" --multilingual
  fi

  throughput "$bulk_set" "$out/bulk.tsv" "$label" "$model" "${bulk[@]}"
  echo
  echo "== parity [$bulk_set, $label] (no noise floor measured on this set)"
  parity "$bulk_set" "$label" "$out/bulk.tsv" "$out/$bulk_set.$label.fw-seq.jsonl" "$out/$bulk_set.$label.voxq.jsonl" --brief
done

echo
echo "== decode + resample to 16 kHz mono (x realtime, best of 5)"
"$worker" decode --repeat 5 "${voice[@]}" > "$out/decode.jsonl" || true
python3 - "$out/decode.jsonl" <<'PY'
import json, subprocess, sys, time, os
rows = {}
for line in open(sys.argv[1]):
    o = json.loads(line)
    if o.get("error"):
        print("decode error:", o); continue
    ext = os.path.splitext(o["file"])[1].lstrip(".")
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", o["file"], "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
                       stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t)
    r = rows.setdefault(ext, [0.0, 0.0, 0.0])
    r[0] += o["duration_s"]; r[1] += o["seconds"]; r[2] += best
print(f"{'format':6} {'audio_s':>8} {'voxq_xRT':>9} {'ffmpeg_xRT':>11} {'ratio':>6}")
for ext, (dur, vx, ff) in sorted(rows.items()):
    print(f"{ext:6} {dur:8.1f} {dur / vx:9.0f} {dur / ff:11.0f} {ff / vx:6.2f}")
print("(ffmpeg timings include its process start-up, as a pipeline calling it would pay)")
PY

summary_extras=()
for e in $extras; do
  [ -x "bench/$e.sh" ] || continue
  echo
  echo "== bench/$e.sh"
  if "bench/$e.sh"; then summary_extras+=("$e.sh ok"); else summary_extras+=("$e.sh exit $?"); fi
done

echo
summary="SUMMARY parity (voxq WER <= faster-whisper + 1 pt): $(printf '%s, ' "${summary_parity[@]}")"
summary="${summary%, } | throughput voxq / best faster-whisper (goal >= 1.3): $(printf '%s, ' "${summary_speed[@]}")"
summary="${summary%, }"
[ ${#summary_extras[@]} -gt 0 ] && summary="$summary | $(printf '%s, ' "${summary_extras[@]}")" && summary="${summary%, }"
echo "$summary | $hw"
exit $fail
