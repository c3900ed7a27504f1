#!/usr/bin/env bash
# Silero VAD: voxq against faster-whisper 1.2.1, and what vad_filter does to transcripts.
#
#   bench/vad.sh
#
# 1. Agreement: `voxq-worker vad --probs` against faster-whisper's get_speech_timestamps
#    (default VadOptions) and speech probabilities on every fixture of fixtures/voice,
#    fixtures/multilingual and fixtures/edge: per file the chunk counts, max/median |Δ| of
#    chunk starts and ends in ms, max |Δp|. Twice: each engine decoding the file itself,
#    then voxq fed faster-whisper's decoded samples (raw f32le, `vad --f32le`), which
#    isolates the VAD from the decoders. Gate on the second (engine notes §2.6):
#    identical chunks and max |Δp| <= 1e-4; the first shows what the decoders add. The VAD model is VOXQ_VAD_MODEL or models/silero_vad_v6.onnx
#    (fetched by scripts/fetch-vad.sh if missing).
# 2. Hallucination: the edge fixtures (noisy, quiet, clipped, silence-3s, silence-padded:
#    those present) transcribed by both engines without and with vad_filter, with tiny.en
#    and with base (BENCH_HALLUC_MODELS): text, words and WER against the text of the note
#    each was made from; then WER over fixtures/voice with and without VAD: vad_filter
#    must lose no words there (WER with VAD <= WER without + 1 point).
# 3. Long audio, for the service's default: the voice notes looped with 3-10 s of
#    near-silent noise between them (10 min; also 60 min with BENCH_LONG=1), Ogg/Opus
#    24 kbit/s, transcribed by both engines with VAD off and on: wall time, WER against
#    the spoken text and peak RSS (/usr/bin/time -v). voxq runs one model replica
#    (--workers 1), as a service worker runs one job.
#
# Environment: BENCH_VENV (venv with faster-whisper==1.2.1, default
# ~/.cache/voxq-bench-venv, created if missing), BENCH_WORKER (voxq-worker, default the
# dev build), BENCH_TINY_MODEL (models/whisper-tiny.en), BENCH_BASE_MODEL
# (VOXQ_BASE_MODEL_DIR or models/whisper-base), BENCH_HALLUC_MODELS (the two),
# BENCH_THREADS (faster-whisper's cpu_threads, default all cores), BENCH_LONG=1 (add the
# 60 min file), BENCH_LONG_SECONDS (the durations of section 3, default "600"),
# BENCH_LONG_FW=0 (skip faster-whisper in section 3), BENCH_SECTIONS
# ("agree halluc long"), BENCH_CACHE (generated long audio, default
# ~/.cache/voxq-bench-vad), BENCH_OUT_DIR (keep outputs).
set -euo pipefail
cd "$(dirname "$0")/.."
worker=${BENCH_WORKER:-${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}/debug/voxq-worker}
venv=${BENCH_VENV:-$HOME/.cache/voxq-bench-venv}
model=${BENCH_TINY_MODEL:-models/whisper-tiny.en}
threads=${BENCH_THREADS:-$(nproc)}
sections=${BENCH_SECTIONS:-agree halluc long}
halluc_models=${BENCH_HALLUC_MODELS:-$model ${BENCH_BASE_MODEL:-${VOXQ_BASE_MODEL_DIR:-models/whisper-base}}}
cache=${BENCH_CACHE:-$HOME/.cache/voxq-bench-vad}
log() { echo "vad: $*" >&2; }
py() { "$venv/bin/python" "$@"; }

[ -x "$worker" ] || { log "voxq-worker not found at $worker (build it or set BENCH_WORKER)"; exit 1; }
if [ ! -x "$venv/bin/python" ] || ! py -c "import faster_whisper" 2>/dev/null; then
  log "installing faster-whisper==1.2.1 into $venv (benchmarks only)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet faster-whisper==1.2.1
fi
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time (for peak RSS)"
  apt-get install -y -qq time >/dev/null
fi
if [ -n "${BENCH_OUT_DIR:-}" ]; then
  out=$BENCH_OUT_DIR; mkdir -p "$out"
else
  out=$(mktemp -d /tmp/voxq-vad.XXXXXX)
  trap 'rm -rf "$out"' EXIT
fi
if [ -z "${VOXQ_VAD_MODEL:-}" ] && [ ! -f models/silero_vad_v6.onnx ] && [ -x scripts/fetch-vad.sh ]; then
  log "fetching the Silero VAD model (scripts/fetch-vad.sh)"
  scripts/fetch-vad.sh >&2 || log "scripts/fetch-vad.sh failed: voxq's VAD rows will show errors"
fi
has_vad_cmd=false has_vad_flag=false
"$worker" vad --help >/dev/null 2>&1 && has_vad_cmd=true
"$worker" transcribe --help 2>/dev/null | grep -q -- '--vad-filter' && has_vad_flag=true

audio_in() { # audio_in DIR: the audio files of a fixture directory, sorted
  find "$1" -maxdepth 1 -type f ! -name '*.tsv' ! -name '*.md' ! -name '*.txt' | sort
}
mapfile -t voice < <(audio_in fixtures/voice)
mapfile -t multi < <(audio_in fixtures/multilingual)
mapfile -t edge < <(audio_in fixtures/edge)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "== VAD: voxq vs faster-whisper $(py -c 'import faster_whisper; print(faster_whisper.__version__)'), $(nproc) cores ($cpu)"
[ "$has_vad_flag" = true ] || echo "VAD: note: $worker has no 'transcribe --vad-filter' yet: voxq rows with VAD are n/a"

# ------------------------------------------------------------------ 1. agreement
if [[ " $sections " == *" agree "* ]]; then
  if [ "$has_vad_cmd" != true ]; then
    echo "VAD AGREEMENT: SKIPPED: $worker has no 'vad' subcommand yet"
  else
    all=("${voice[@]}" "${multi[@]}" "${edge[@]}")
    mkdir -p "$out/pcm"
    py bench/vad_compare.py fw-vad --probs --pcm-dir "$out/pcm" "${all[@]}" >"$out/agree.fw.jsonl"
    "$worker" vad --probs "${all[@]}" >"$out/agree.voxq.jsonl" 2>"$out/agree.voxq.log" \
      || { log "voxq-worker vad failed:"; tail -5 "$out/agree.voxq.log" >&2; }
    python3 bench/vad_compare.py agree --label "native decode, ${#all[@]} fixtures" \
      "$out/agree.fw.jsonl" "$out/agree.voxq.jsonl" || true
    mapfile -t pcm < <(find "$out/pcm" -name '*.f32' | sort)
    "$worker" vad --probs --f32le "${pcm[@]}" >"$out/agree-pcm.voxq.jsonl" 2>"$out/agree-pcm.voxq.log" \
      || { log "voxq-worker vad --f32le failed:"; tail -5 "$out/agree-pcm.voxq.log" >&2; }
    python3 bench/vad_compare.py agree --gate --label "same samples (faster-whisper's decode), ${#pcm[@]} fixtures" \
      "$out/agree.fw.jsonl" "$out/agree-pcm.voxq.jsonl" || true
  fi
fi

# ------------------------------------------------------------------ 2. hallucination
if [[ " $sections " == *" halluc "* ]]; then
  files=("${voice[@]}" "${edge[@]}")
  for m in $halluc_models; do
    if [ ! -f "$m/model.bin" ]; then echo "VAD HALLUCINATION [${m##*/}]: SKIPPED (no model in $m)"; continue; fi
    tag=${m##*/}
    for vad in off on; do
      flag=(); [ "$vad" = on ] && flag=(--vad-filter)
      py bench/words.py fw --model-dir "$m" --threads "$threads" "${flag[@]}" "${files[@]}" \
        >"$out/tr.$tag.fw.$vad.jsonl" 2>"$out/tr.$tag.fw.$vad.log"
      if [ "$vad" = off ] || [ "$has_vad_flag" = true ]; then
        "$worker" transcribe --model-dir "$m" --format jsonl "${flag[@]}" "${files[@]}" \
          >"$out/tr.$tag.voxq.$vad.jsonl" 2>"$out/tr.$tag.voxq.$vad.log"
      fi
    done
    runs=(--run "faster-whisper, no VAD=$out/tr.$tag.fw.off.jsonl" --run "faster-whisper, VAD=$out/tr.$tag.fw.on.jsonl"
          --run "voxq, no VAD=$out/tr.$tag.voxq.off.jsonl" --run "voxq, VAD=$out/tr.$tag.voxq.on.jsonl")
    python3 bench/vad_compare.py halluc --label "$tag" --tsv fixtures/voice/transcripts.tsv "${runs[@]}" "${edge[@]}"
    python3 bench/vad_compare.py wer --label "voice $tag" --tsv fixtures/voice/transcripts.tsv "${runs[@]}" \
      --pair "faster-whisper:faster-whisper, no VAD:faster-whisper, VAD" --pair "voxq:voxq, no VAD:voxq, VAD" || true
  done
fi

# ------------------------------------------------------------------ 3. long audio
if [[ " $sections " == *" long "* ]]; then
  read -r -a durations <<<"${BENCH_LONG_SECONDS:-600}"
  [ "${BENCH_LONG:-0}" = 1 ] && durations+=(3600)
  mkdir -p "$cache"
  echo "VAD LONG AUDIO [${model##*/}]: voice notes looped with 3-10 s of -66 dBFS noise between them, Ogg/Opus 24k;" \
    "voxq --workers 1, faster-whisper cpu_threads=$threads"
  printf 'VAD LONG AUDIO %-7s %-15s %-4s %8s %8s %9s %10s  %s\n' audio engine vad wall_s xRT WER peak_MB words
  for seconds in "${durations[@]}"; do
    ogg="$cache/long-${seconds}s.ogg" txt="$cache/long-${seconds}s.txt"
    if (( seconds % 60 == 0 )); then label="$((seconds / 60))min"; else label="${seconds}s"; fi
    if [ ! -s "$ogg" ] || [ ! -s "$txt" ] || [ ! -s "$ogg.info" ]; then
      py bench/vad_compare.py make-long --seconds "$seconds" --tsv fixtures/voice/transcripts.tsv \
        --out "$out/long.wav" --text "$txt.part" "${voice[@]}" >"$ogg.info"
      ffmpeg -v error -y -i "$out/long.wav" -map_metadata -1 -fflags +bitexact -flags:a +bitexact \
        -c:a libopus -b:a 24k -ar 48000 -ac 1 -f ogg "$ogg"
      mv "$txt.part" "$txt"; rm -f "$out/long.wav"
    fi
    echo "VAD LONG AUDIO input $label: $(cat "$ogg.info")"
    for engine in voxq faster-whisper; do
      [ "$engine" = faster-whisper ] && [ "${BENCH_LONG_FW:-1}" = 0 ] && continue
      for vad in off on; do
        flag=(); [ "$vad" = on ] && flag=(--vad-filter)
        res="$out/long-$seconds.$engine.$vad"
        if [ "$engine" = voxq ]; then
          if [ "$vad" = on ] && [ "$has_vad_flag" != true ]; then
            printf 'VAD LONG AUDIO %-7s %-15s %-4s %s\n' "$label" "$engine" "$vad" "n/a (no --vad-filter)"; continue
          fi
          cmd=("$worker" transcribe --model-dir "$model" --workers 1 --format jsonl "${flag[@]}" "$ogg")
        else
          cmd=("$venv/bin/python" bench/words.py fw --model-dir "$model" --threads "$threads" "${flag[@]}" "$ogg")
        fi
        status=0
        /usr/bin/time -v -o "$res.time" "${cmd[@]}" >"$res.jsonl" 2>"$res.log" || status=$?
        peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$res.time")
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$res.time" \
          | awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }')
        if [ "$status" -ne 0 ]; then
          printf 'VAD LONG AUDIO %-7s %-15s %-4s exit %s: %s\n' "$label" "$engine" "$vad" "$status" "$(tail -1 "$res.log")"
          continue
        fi
        read -r w_wer w_ref w_hyp <<<"$(python3 bench/vad_compare.py long-wer "$txt" "$res.jsonl" | sed 's/[a-z_]*=//g')"
        printf 'VAD LONG AUDIO %-7s %-15s %-4s %8.1f %8.1f %8.2f%% %10.1f  %s of %s\n' "$label" "$engine" "$vad" \
          "$wall" "$(echo "$seconds / $wall" | bc -l)" "$(echo "$w_wer * 100" | bc -l)" "$(echo "$peak_kb / 1000" | bc -l)" "$w_hyp" "$w_ref"
      done
    done
  done
fi
