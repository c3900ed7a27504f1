#!/usr/bin/env bash
# Worker memory with tiny.en and with base: resident set of `voxq-worker run` idle after
# the model is loaded and at its peak under load, and the peak of the CLI `transcribe`.
#
#   bench/rss.sh
#
# Per model (BENCH_RSS_MODELS, default "models/whisper-tiny.en models/whisper-base"):
# 1. `voxq-worker run` against fresh services (scripts/services.sh, as bench/load.sh
#    starts them) with the service's default job slots (VOXQ_INTERACTIVE_CONCURRENCY 2 +
#    VOXQ_BULK_CONCURRENCY 1 = 3 model replicas unless set) and the transcript cache off.
#    Idle: VmRSS and VmHWM from /proc/PID/status, 3 s after it logged "voxq-worker
#    starting" (the default model is loaded before that line).
# 2. Under load: every fixture voice note (fixtures/voice, 14 notes, 2-34 s) submitted
#    BENCH_RSS_ROUNDS (2) times in each lane (interactive and bulk), so every replica
#    works; VmRSS sampled every 0.2 s until all are finished, then VmHWM. The first
#    model's first round uploads the notes (multipart); later jobs name the s3:// objects.
# 3. The CLI: `voxq-worker transcribe` of the same 14 notes, peak RSS from
#    /usr/bin/time -v, with its default replicas (one per core, at most 4) and with one.
# MB = 10^6 bytes.
#
# Environment: BENCH_WORKER / BENCH_API (binaries, default the dev build),
# BENCH_RSS_MODELS, BENCH_RSS_ROUNDS, VOXQ_* passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}
worker_bin=${BENCH_WORKER:-$target/debug/voxq-worker}
api_bin=${BENCH_API:-$target/debug/voxq-api}
models=${BENCH_RSS_MODELS:-models/whisper-tiny.en models/whisper-base}
rounds=${BENCH_RSS_ROUNDS:-2}
s3_port=${VOXQ_TEST_S3_PORT:-9000}
log() { echo "rss: $*" >&2; }
die() { log "error: $*"; exit 1; }

for b in "$worker_bin" "$api_bin"; do [ -x "$b" ] || die "$b not found (build it or set BENCH_WORKER/BENCH_API)"; done
for m in $models; do [ -f "$m/model.bin" ] || die "no model in $m (scripts/fetch-model.sh)"; done
for tool in curl psql python3 redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (scripts/services.sh installs PostgreSQL and Redis)"
done
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time (for peak RSS)"
  apt-get install -y -qq time >/dev/null
fi
mapfile -t notes < <(find fixtures/voice -maxdepth 1 -type f ! -name '*.tsv' | sort)

# --- clean-up: only what this run started or created ---
work=$(mktemp -d /tmp/voxq-rss.XXXXXX)
pids=()
prefix="voxqrss-$$-$(date +%s)"
moto_was_up=false
curl -fsS "http://127.0.0.1:$s3_port/moto-api/" >/dev/null 2>&1 && moto_was_up=true
stop_pid() { # SIGTERM, up to 20 s, then SIGKILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$prefix:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
  redis-cli -h 127.0.0.1 -p 6379 zrem core:apalis:queues:list "$prefix:interactive:workers" "$prefix:bulk:workers" >/dev/null
  if [ -n "${VOXQ_TEST_DATABASE:-}" ]; then
    if $moto_was_up; then
      psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $VOXQ_TEST_DATABASE WITH (FORCE)" >/dev/null
    else
      scripts/services.sh down "$VOXQ_TEST_DATABASE"
    fi
  fi
  if [ "$rc" -eq 0 ]; then rm -rf "$work"; else log "failed (exit $rc); logs kept in $work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mb() { echo "scale=1; $1 / 1000" | bc -l; }            # kB -> MB
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; } # status_kb PID VmRSS

# --- services, API ---
eval "$(scripts/services.sh up)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export VOXQ_LISTEN_ADDR="127.0.0.1:$port" VOXQ_QUEUE_PREFIX="$prefix" VOXQ_RATE_LIMIT_PER_S=0
export VOXQ_TRANSCRIPT_CACHE_TTL_S=0 VOXQ_SHUTDOWN_GRACE_S=${VOXQ_SHUTDOWN_GRACE_S:-10}
interactive=${VOXQ_INTERACTIVE_CONCURRENCY:-2} bulk=${VOXQ_BULK_CONCURRENCY:-1}
sql() { psql "$VOXQ_DATABASE_URL" -qAt -v ON_ERROR_STOP=1 "$@"; }
"$api_bin" serve >"$work/api.log" 2>&1 &
api_pid=$!; pids+=("$api_pid")
for _ in $(seq 300); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$api_pid" 2>/dev/null || { tail -20 "$work/api.log" >&2; die "voxq-api exited"; }
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || die "voxq-api is not answering on $base"
key=$("$api_bin" keys create --tenant bench-rss 2>>"$work/api.log" | tail -1)
[ -n "$key" ] || die "no API key"
auth=(-H "Authorization: Bearer $key")
job_id() { python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }

sources=()   # the notes' s3:// objects, once uploaded
results=()
for model in $models; do
  name=${model##*/}
  log "$name: starting the worker ($interactive interactive + $bulk bulk slots)"
  VOXQ_MODEL_DIR=$model "$worker_bin" run >"$work/worker.$name.log" 2>&1 &
  worker_pid=$!; pids+=("$worker_pid")
  for _ in $(seq 1200); do
    grep -q "voxq-worker starting" "$work/worker.$name.log" && break
    kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$work/worker.$name.log" >&2; die "voxq-worker exited"; }
    sleep 0.1
  done
  sleep 3
  idle_rss=$(status_kb "$worker_pid" VmRSS) idle_hwm=$(status_kb "$worker_pid" VmHWM)

  # Load: sample VmRSS in the background while the jobs run.
  ( while kill -0 "$worker_pid" 2>/dev/null; do status_kb "$worker_pid" VmRSS; sleep 0.2; done ) >"$work/rss.$name" 2>/dev/null &
  sampler=$!; pids+=("$sampler")
  : >"$work/ids.$name"
  t0=$(date +%s.%N)
  for _ in $(seq "$rounds"); do
    for lane in interactive bulk; do
      for i in "${!notes[@]}"; do
        if [ "${#sources[@]}" -lt "${#notes[@]}" ]; then
          id=$(curl -fsS "${auth[@]}" -F "file=@${notes[$i]}" -F tasks=transcribe -F lane=$lane "$base/v1/jobs" | job_id)
          sources+=("$(sql -c "SELECT source FROM jobs WHERE id = '$id'")")
        else
          id=$(curl -fsS "${auth[@]}" -H 'Content-Type: application/json' \
            -d "{\"audio_url\":\"${sources[$i]}\",\"tasks\":[\"transcribe\"],\"lane\":\"$lane\"}" "$base/v1/jobs" | job_id)
        fi
        echo "$id" >>"$work/ids.$name"
      done
    done
  done
  n=$(wc -l <"$work/ids.$name")
  ids_sql=$(sed "s/.*/'&'/" "$work/ids.$name" | paste -sd, -)
  deadline=$(( $(date +%s) + 1800 ))
  while :; do
    finished=$(sql -c "SELECT count(*) FROM jobs WHERE id IN ($ids_sql) AND status IN ('completed', 'failed')")
    [ "$finished" -ge "$n" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || die "$name: only $finished of $n jobs finished in 30 min"
    kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$work/worker.$name.log" >&2; die "voxq-worker exited"; }
    sleep 0.5
  done
  t1=$(date +%s.%N)
  load_hwm=$(status_kb "$worker_pid" VmHWM) after_rss=$(status_kb "$worker_pid" VmRSS)
  stop_pid "$sampler"
  peak_sampled=$(sort -n "$work/rss.$name" | tail -1)
  failed=$(sql -c "SELECT count(*) FROM jobs WHERE id IN ($ids_sql) AND status = 'failed'")
  stop_pid "$worker_pid"
  results+=("RSS [$name] worker run, $((interactive + bulk)) replicas ($interactive interactive + $bulk bulk): idle after load VmRSS $(mb "$idle_rss") MB (VmHWM $(mb "$idle_hwm") MB, the load included)")
  results+=("RSS [$name] worker run under load, $n jobs ($((n - failed)) completed, $failed failed) in $(printf '%.1f' "$(echo "$t1 - $t0" | bc -l)") s: peak VmRSS sampled $(mb "$peak_sampled") MB, VmHWM $(mb "$load_hwm") MB; VmRSS after $(mb "$after_rss") MB")

  # The CLI, default replicas and one.
  for workers in default 1; do
    wflag=(); [ "$workers" = 1 ] && wflag=(--workers 1)
    /usr/bin/time -v -o "$work/time.$name.$workers" "$worker_bin" transcribe --model-dir "$model" "${wflag[@]}" \
      --format jsonl "${notes[@]}" >"$work/cli.$name.$workers.jsonl" 2>"$work/cli.$name.$workers.log" \
      || die "voxq-worker transcribe failed: $(tail -3 "$work/cli.$name.$workers.log")"
    peak=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.$name.$workers")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.$name.$workers")
    label="$workers replicas"; [ "$workers" = default ] && label="default replicas (one per core, at most 4: $(( $(nproc) < 4 ? $(nproc) : 4 )))"
    [ "$workers" = 1 ] && label="1 replica"
    results+=("RSS [$name] CLI transcribe of ${#notes[@]} voice notes, $label: peak RSS $(mb "$peak") MB (wall $wall)")
  done
done

echo "== worker memory, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)); MB = 10^6 bytes"
for model in $models; do
  echo "RSS [${model##*/}] model.bin $(echo "scale=1; $(stat -L -c %s "$model/model.bin") / 1000000" | bc -l) MB on disk"
done
printf '%s\n' "${results[@]}"
