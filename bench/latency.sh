#!/usr/bin/env bash
# Latency of one interactive voice note through the service, on an idle worker: from
# POST /v1/jobs of a 5 s Ogg/Opus note to its transcript being visible, p50/p95/max over
# BENCH_LATENCY_JOBS (50) notes sent one at a time.
#
#   bench/latency.sh
#
# Fresh services as bench/load.sh starts them (scripts/services.sh: PostgreSQL with a new
# database, Redis, moto S3), voxq-api and one `voxq-worker run` transcribing for real with
# tiny.en: one model replica (VOXQ_INTERACTIVE_CONCURRENCY=1, VOXQ_BULK_CONCURRENCY=0, so
# the replica gets every core) and the transcript cache off (VOXQ_TRANSCRIPT_CACHE_TTL_S=0:
# the same note is sent every time, and a cached transcript would measure nothing).
# The note (fixtures/voice/01-running-late.ogg, 5.3 s) is uploaded once through the
# multipart API; that job warms the worker up. Then bench/longpoll.py: per job,
# POST /v1/jobs {audio_url, tasks: [transcribe]} and GET /v1/jobs/{id}?wait=30 on one
# keep-alive connection (5 warm-up jobs, not counted). From the database, the same jobs'
# queue wait (created -> started) and run time (started -> finished) split the figure.
# The worker's idle poll interval (VOXQ_POLL_INTERVAL_MS, service default 100 ms) is
# part of what a note waits; it is printed with the figures.
#
# Environment: BENCH_WORKER / BENCH_API (binaries, default the dev build),
# BENCH_LATENCY_MODEL (models/whisper-tiny.en), BENCH_LATENCY_JOBS (50),
# BENCH_FIXTURE (the note), VOXQ_* passed through (e.g. VOXQ_POLL_INTERVAL_MS).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}
worker_bin=${BENCH_WORKER:-$target/debug/voxq-worker}
api_bin=${BENCH_API:-$target/debug/voxq-api}
model=${BENCH_LATENCY_MODEL:-models/whisper-tiny.en}
jobs=${BENCH_LATENCY_JOBS:-50}
fixture=${BENCH_FIXTURE:-fixtures/voice/01-running-late.ogg}
s3_port=${VOXQ_TEST_S3_PORT:-9000}
log() { echo "latency: $*" >&2; }
die() { log "error: $*"; exit 1; }

for b in "$worker_bin" "$api_bin"; do [ -x "$b" ] || die "$b not found (build it or set BENCH_WORKER/BENCH_API)"; done
[ -f "$model/model.bin" ] || die "no model in $model (scripts/fetch-model.sh)"
[ -f "$fixture" ] || die "fixture $fixture not found"
for tool in curl psql python3 redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (scripts/services.sh installs PostgreSQL and Redis)"
done

# --- clean-up: only what this run started or created ---
work=$(mktemp -d /tmp/voxq-latency.XXXXXX)
pids=()
prefix="voxqlat-$$-$(date +%s)"
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

# --- services, API, worker ---
eval "$(scripts/services.sh up)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export VOXQ_LISTEN_ADDR="127.0.0.1:$port" VOXQ_QUEUE_PREFIX="$prefix" VOXQ_RATE_LIMIT_PER_S=0
export VOXQ_MODEL_DIR=$model VOXQ_TRANSCRIPT_CACHE_TTL_S=0
export VOXQ_INTERACTIVE_CONCURRENCY=${VOXQ_INTERACTIVE_CONCURRENCY:-1} VOXQ_BULK_CONCURRENCY=${VOXQ_BULK_CONCURRENCY:-0}
export VOXQ_SHUTDOWN_GRACE_S=${VOXQ_SHUTDOWN_GRACE_S:-10}
sql() { psql "$VOXQ_DATABASE_URL" -qAt -v ON_ERROR_STOP=1 "$@"; }

"$api_bin" serve >"$work/api.log" 2>&1 &
api_pid=$!; pids+=("$api_pid")
for _ in $(seq 300); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$api_pid" 2>/dev/null || { tail -20 "$work/api.log" >&2; die "voxq-api exited"; }
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || die "voxq-api is not answering on $base"
key=$("$api_bin" keys create --tenant bench-latency 2>>"$work/api.log" | tail -1)
[ -n "$key" ] || die "no API key"
auth=(-H "Authorization: Bearer $key")

"$worker_bin" run >"$work/worker.log" 2>&1 &
worker_pid=$!; pids+=("$worker_pid")
for _ in $(seq 600); do
  grep -q "voxq-worker starting" "$work/worker.log" && break
  kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$work/worker.log" >&2; die "voxq-worker exited"; }
  sleep 0.1
done

# The note goes to S3 once; its job (transcribed for real) warms the worker up.
smoke=$(curl -fsS "${auth[@]}" -F "file=@$fixture" -F tasks=transcribe "$base/v1/jobs") || die "multipart upload failed"
smoke_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$smoke")
audio_url=$(sql -c "SELECT source FROM jobs WHERE id = '$smoke_id'")
[[ "$audio_url" == s3://* ]] || die "unexpected source '$audio_url'"
view=$(curl -fsS "${auth[@]}" "$base/v1/jobs/$smoke_id?wait=60") || die "GET of the first job failed"
read -r status text <<<"$(python3 -c 'import json, sys; o = json.load(sys.stdin); print(o["status"], ((o.get("result") or {}).get("text") or "")[:60])' <<<"$view")"
[ "$status" = completed ] || { tail -20 "$work/worker.log" >&2; die "first job $smoke_id is '$status', not completed"; }
log "API on $base, worker up; first job: \"$text\""

python3 bench/longpoll.py --url "$base" --key "$key" --audio-url "$audio_url" --count "$jobs" --warmup 5 \
  --ids-out "$work/ids" >"$work/longpoll.json"
jf() { python3 -c 'import json, sys; o = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$work/longpoll.json" "$1"; }
sql -c "CREATE TABLE bench_latency_ids (id uuid PRIMARY KEY)" -c "\\copy bench_latency_ids FROM '$work/ids'"
read -r wait_p50 wait_p95 run_p50 run_p95 <<<"$(sql -F ' ' <<SQL
SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY w))::numeric, 1),
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY w))::numeric, 1),
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY r))::numeric, 1),
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY r))::numeric, 1)
FROM (SELECT extract(epoch FROM started_at - created_at) * 1000 AS w,
             extract(epoch FROM finished_at - started_at) * 1000 AS r
      FROM jobs JOIN bench_latency_ids USING (id) WHERE status = 'completed') t
SQL
)"
duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$fixture")

echo "== latency of one interactive note, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "LATENCY cpu: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "LATENCY setup: ${fixture##*/} (${duration} s Ogg/Opus), model ${model##*/}, worker replicas $VOXQ_INTERACTIVE_CONCURRENCY interactive + $VOXQ_BULK_CONCURRENCY bulk," \
  "poll_interval_ms=${VOXQ_POLL_INTERVAL_MS:-100(default)}, transcript cache off; binaries $(date -u -r "$worker_bin" +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "LATENCY POST -> transcript visible (long-poll), $(jf 'o["n"]') notes one at a time: p50 $(jf 'o["p50_ms"]') ms, p95 $(jf 'o["p95_ms"]') ms, max $(jf 'o["max_ms"]') ms" \
  "($(jf 'o["completed"]') completed, $(jf 'o["with_text"]') with text, $(jf 'o["cached"]') from the cache)"
echo "LATENCY of which queue wait (created -> started): p50 $wait_p50 ms, p95 $wait_p95 ms; run (started -> finished: fetch, decode, transcribe, store): p50 $run_p50 ms, p95 $run_p95 ms"
