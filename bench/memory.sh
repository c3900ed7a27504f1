#!/usr/bin/env bash
# Peak memory of `voxq-worker transcribe` against the size of the audio it has to hold.
#
#   bench/memory.sh [SECONDS...]      (default: 600 3600 14390, i.e. 10 min, 1 h, 4 h)
#
# For each duration, two files:
# - speech: the fixture voice notes (fixtures/voice) concatenated, looped to the duration
#   and encoded as Ogg/Opus at 24 kbit/s, a voice note's usual format;
# - silence: digital silence as FLAC at 48 kHz mono, the file of issue 8 (a few hundred
#   kB that decode to hours of samples).
# "4 h" is 14390 s: the limit is 14400 s, and an Opus file's declared length is a few
# milliseconds longer than asked for.
#
# Each file is transcribed by its own process; its peak RSS comes from /usr/bin/time -v.
# Printed next to it: the size of the 16 kHz mono f32 signal (duration × 16000 × 4 bytes),
# which the worker must hold once, and the model: model.bin × replicas on disk, and "in
# use", the peak RSS of transcribing one 34 s fixture note (weights, runtime, libraries and
# one window's inference buffers; its PCM is 2 MB). The goal, with the model in use:
#   peak RSS ≤ model + 1.3 × PCM, and ≤ 400 MB for any note under 15 min with tiny.en.
# glibc tunables pass through, e.g. MALLOC_MMAP_THRESHOLD_=131072 (see the README).
#
# Environment: VOXQ_WORKER (binary, default the dev build), VOXQ_MODEL_DIR (default
# models/whisper-tiny.en), BENCH_WORKERS (model replicas, default 1: one file at a time, as a
# service worker runs a job), BENCH_KINDS (default "speech silence"), BENCH_CACHE (where the
# generated audio is kept, default ~/.cache/voxq-bench-memory).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}"
worker=${VOXQ_WORKER:-$CARGO_TARGET_DIR/debug/voxq-worker}
model=${VOXQ_MODEL_DIR:-models/whisper-tiny.en}
replicas=${BENCH_WORKERS:-1}
kinds=${BENCH_KINDS:-speech silence}
cache=${BENCH_CACHE:-$HOME/.cache/voxq-bench-memory}
if [ $# -gt 0 ]; then durations=("$@"); else durations=(600 3600 14390); fi

if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (for peak RSS)" >&2
  apt-get install -y -qq time >/dev/null
fi
[ -x "$worker" ] || cargo build -p voxq-worker
mkdir -p "$cache"

# The fixture voice notes as one 16 kHz mono WAV (about two minutes), the loop's unit.
base="$cache/voice-notes.wav"
if [ ! -s "$base" ]; then
  notes=(fixtures/voice/*.ogg fixtures/voice/*.opus fixtures/voice/*.webm fixtures/voice/*.m4a
         fixtures/voice/*.mp3 fixtures/voice/*.flac fixtures/voice/*.wav)
  inputs=() filters="" labels=""
  for i in "${!notes[@]}"; do
    inputs+=(-i "${notes[$i]}")
    filters+="[$i:a]aformat=sample_fmts=flt:sample_rates=16000:channel_layouts=mono[a$i];"
    labels+="[a$i]"
  done
  ffmpeg -v error -y "${inputs[@]}" \
    -filter_complex "${filters}${labels}concat=n=${#notes[@]}:v=0:a=1[out]" -map "[out]" \
    -c:a pcm_s16le "$base"
fi

# make_input KIND SECONDS: prints the path of the input file, generating it once.
make_input() {
  local kind=$1 seconds=$2 path
  case $kind in
    speech)
      path="$cache/speech-${seconds}s.ogg"
      [ -s "$path" ] || ffmpeg -v error -y -stream_loop -1 -i "$base" -t "$seconds" \
        -c:a libopus -b:a 24k -ac 1 "$path"
      ;;
    silence)
      path="$cache/silence-${seconds}s.flac"
      [ -s "$path" ] || ffmpeg -v error -y -f lavfi -i "anullsrc=r=48000:cl=mono" \
        -t "$seconds" -c:a flac "$path"
      ;;
    *) echo "unknown kind '$kind'" >&2; return 1 ;;
  esac
  echo "$path"
}

mb() { echo "scale=1; $1 / 1000000" | bc -l; }
file_bytes=$(( $(stat -c %s "$model/model.bin") * replicas ))
# The model in use: peak RSS of one short note.
model_kb=$(/usr/bin/time -v "$worker" transcribe --model-dir "$model" --workers "$replicas" \
  --format jsonl fixtures/voice/06-project-update.ogg 2>&1 >/dev/null \
  | awk -F': ' '/Maximum resident set size/ {print $2}')
model_bytes=$(( model_kb * 1000 ))
results=$(mktemp)
trap 'rm -f "$results"' EXIT

echo "worker: $worker"
echo "model:  $model, $(mb "$file_bytes") MB of model.bin × $replicas replica(s) on disk," \
  "$(mb "$model_bytes") MB in use (peak RSS of a 34 s note); $(nproc) cores"
for seconds in "${durations[@]}"; do
  for kind in $kinds; do
    input=$(make_input "$kind" "$seconds")
    log=$(mktemp)
    status=0
    /usr/bin/time -v "$worker" transcribe --model-dir "$model" --workers "$replicas" \
      --format jsonl "$input" > "$log.out" 2> "$log" || status=$?
    peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
    outcome=$(python3 - "$log.out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not lines:
    print("no output")
elif lines[0].get("error"):
    print("error " + str(lines[0].get("error_code")))
else:
    r = lines[0]
    print(f"{len((r.get('text') or '').split())} words, quality {(r.get('scores') or {}).get('quality')}")
PY
)
    [ "$status" -eq 0 ] || outcome="exit $status, $outcome"
    rm -f "$log" "$log.out"
    printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$kind" "$seconds" "$(stat -c %s "$input")" \
      "$peak_kb" "$wall" "$outcome" >> "$results"
    echo "  $kind ${seconds}s: peak ${peak_kb} kB, ${wall}, ${outcome}" >&2
  done
done

echo
printf "%-8s %9s %9s %10s %9s %10s %16s %-6s %9s  %s\n" \
  kind audio file_MB PCM_f32_MB model_MB peak_RSS_MB "model+1.3×PCM" goal wall outcome
while IFS=$'\t' read -r kind seconds bytes peak_kb wall outcome; do
  pcm=$(( seconds * 16000 * 4 ))
  peak=$(( peak_kb * 1000 ))
  bound=$(echo "$model_bytes + 1.3 * $pcm" | bc -l)
  ok=yes
  (( $(echo "$peak > $bound" | bc -l) )) && ok=NO
  (( seconds < 900 && peak > 400000000 )) && ok=NO
  if (( seconds >= 3600 )); then audio="$(echo "scale=2; $seconds / 3600" | bc) h"
  else audio="$(( seconds / 60 )) min"; fi
  printf "%-8s %9s %9s %10s %9s %10s %16s %-6s %9s  %s\n" "$kind" "$audio" "$(mb "$bytes")" \
    "$(mb "$pcm")" "$(mb "$model_bytes")" "$(mb "$peak")" "$(mb "$bound")" "$ok" "$wall" "$outcome"
done < "$results"
