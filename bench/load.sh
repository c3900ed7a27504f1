#!/usr/bin/env bash
# Load benchmark of the service path (voxq-api + Redis queue + voxq-worker in no-op mode),
# with redis-benchmark on the same machine as the peer reference.
#
#   bench/load.sh            (or: make bench-load)
#
# 1. Fresh services (scripts/services.sh: PostgreSQL with a new database, Redis, moto S3);
#    voxq-api (rate limit off) and `voxq-worker run` with VOXQ_BENCH_NOOP_TRANSCRIBE=true
#    (the worker still fetches the object from S3 and stores an empty result). One fixture
#    is uploaded once through POST /v1/jobs (multipart); its s3:// source, read back from
#    the database, is the audio_url of every later job. That first job must complete
#    before anything is measured.
# 2. enqueue -> completed (API + worker): jobs submitted through POST /v1/jobs; from the
#    database, completed jobs/s = completed / (last finished_at - first created_at) and
#    the p50/p95/p99 of finished_at - created_at.
#    a. burst: BENCH_E2E_JOBS jobs submitted as fast as the API takes them; the latency
#       then includes the wait behind the backlog (throughput-bound).
#    b. paced: jobs submitted at a fixed rate of half the burst throughput for
#       BENCH_PACED_S seconds: the latency of a job on a system that keeps up.
# 3. POST /v1/jobs alone (the worker is stopped first, so on 2 cores it does not compete
#    with the API; the jobs stay queued and are dropped with the database):
#    a. wrk, closed loop, BENCH_WRK_CONNECTIONS connections: max requests/s and wrk's
#       latency distribution (bench/post_job.lua prints the percentiles).
#    b. open loop at a fixed BENCH_RATE req/s (bench/loadgen.py, stdlib asyncio: wrk has
#       no rate control). Latency is measured from each request's due time, so stalls
#       are not hidden (no coordinated omission); the generator's own lag is reported,
#       and a run that could not offer the rate is flagged.
#    c. POST /v1/batches: a JSONL body of BENCH_BATCH_ITEMS (100,000) items in one request,
#       BENCH_BATCH_REPEAT (3) times, bulk lane (rows inserted with UNNEST, handed to Redis
#       later by the dispatcher) and interactive lane (also pushed to Redis, pipelined, in
#       the request): items/s = items / the request's total time (curl), which includes
#       uploading and validating every line.
# 4. redis-benchmark (SET, LPUSH, RPOP; -P 1 and -P 16) against the same Redis, in its own
#    logical database (BENCH_REDIS_DB); the two keys it writes are deleted afterwards:
#    LPUSH -P 16 is the ceiling of any enqueue path through this Redis.
# 5. Fairness of the bulk lane: the worker runs again (VOXQ_BULK_CONCURRENCY 4,
#    VOXQ_BULK_QUEUE_DEPTH 8 unless set); tenant A submits a batch of BENCH_FAIR_BACKLOG
#    (5,000) items, and once 100 of them are done tenant B submits 5. Printed: how many of
#    A's jobs started between B's submission and the start of B's last job (B's wait in
#    job-service-times, times the concurrency), B's wait in ms, and A's backlog left.
# 6. Long-poll: BENCH_LONGPOLL_JOBS (300) interactive no-op jobs one at a time, each
#    POST /v1/jobs then GET /v1/jobs/{id}?wait=30 (bench/longpoll.py): enqueue -> result
#    visible, p50/p99 (goal p50 <= 25 ms, p99 <= 100 ms). The worker polls Redis every
#    VOXQ_POLL_INTERVAL_MS (set to 10 for this run unless given).
#
# The load generators run on the same machine as the services and take CPU from them:
# figures are for this whole machine, not for the API alone. The machine may be shared:
# every row notes the CPU share other processes used during it (bench/cpu_share.py), and
# a warning follows the table when that reached 10% anywhere. Binaries are the dev profile
# (optimised; the only profile this project uses).
#
# Knobs (environment): BENCH_FIXTURE, BENCH_E2E_JOBS (2000), BENCH_SUBMIT_CONNECTIONS (16),
# BENCH_PACED_S (20), BENCH_WRK_DURATION (15s), BENCH_WRK_CONNECTIONS (32), BENCH_RATE (500),
# BENCH_RATE_S (20), BENCH_RATE_CONNECTIONS (64), BENCH_REDIS_DB (15). VOXQ_* settings are
# passed through to both binaries (e.g. VOXQ_INTERACTIVE_CONCURRENCY,
# VOXQ_QUEUE_FETCH_BATCH, VOXQ_POLL_INTERVAL_MS, VOXQ_LOG); the script sets
# VOXQ_LISTEN_ADDR (a free port), VOXQ_QUEUE_PREFIX (unique per run, so other voxq
# processes on this Redis are not disturbed), VOXQ_RATE_LIMIT_PER_S=0 and, for the worker,
# VOXQ_BENCH_NOOP_TRANSCRIBE=true.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}"
api_bin="$CARGO_TARGET_DIR/debug/voxq-api"
worker_bin="$CARGO_TARGET_DIR/debug/voxq-worker"
fixture=${BENCH_FIXTURE:-fixtures/voice/01-running-late.ogg}
e2e_jobs=${BENCH_E2E_JOBS:-2000}
submit_conns=${BENCH_SUBMIT_CONNECTIONS:-16}
paced_s=${BENCH_PACED_S:-20}
wrk_duration=${BENCH_WRK_DURATION:-15s}
wrk_conns=${BENCH_WRK_CONNECTIONS:-32}
rate=${BENCH_RATE:-500}
rate_s=${BENCH_RATE_S:-20}
rate_conns=${BENCH_RATE_CONNECTIONS:-64}
redis_db=${BENCH_REDIS_DB:-15}
batch_items=${BENCH_BATCH_ITEMS:-100000}
batch_repeat=${BENCH_BATCH_REPEAT:-3}
fair_backlog=${BENCH_FAIR_BACKLOG:-5000}
longpoll_jobs=${BENCH_LONGPOLL_JOBS:-300}
s3_port=${VOXQ_TEST_S3_PORT:-9000}

log() { echo "load: $*" >&2; }
die() { log "error: $*"; exit 1; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

# --- tools ---
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
for tool in curl psql python3 redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (scripts/services.sh installs PostgreSQL and Redis)"
done
[ -f "$fixture" ] || die "fixture $fixture not found"
if [ ! -x "$api_bin" ] || [ ! -x "$worker_bin" ]; then
  log "building voxq-api and voxq-worker"
  flock /tmp/voxq-cargo.lock cargo build -p voxq-api -p voxq-worker
fi

# --- clean-up: only what this run started or created ---
work=$(mktemp -d /tmp/voxq-load.XXXXXX)
pids=()
prefix="voxqbench-$$-$(date +%s)"
moto_was_up=false
curl -fsS "http://127.0.0.1:$s3_port/moto-api/" >/dev/null 2>&1 && moto_was_up=true
redis_keys_new=()

stop_pid() { # stop_pid PID: SIGTERM, up to 20 s to exit, then SIGKILL
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
  # This run's queue keys, its entries in apalis' shared queue list, and redis-benchmark's keys.
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$prefix:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
  redis-cli -h 127.0.0.1 -p 6379 zrem core:apalis:queues:list "$prefix:interactive:workers" "$prefix:bulk:workers" >/dev/null
  for k in "${redis_keys_new[@]}"; do redis-cli -h 127.0.0.1 -p 6379 -n "$redis_db" del "$k" >/dev/null; done
  if [ -n "${VOXQ_TEST_DATABASE:-}" ]; then
    if $moto_was_up; then
      # Someone else's moto server: drop only our database, leave their server running.
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
key=$("$api_bin" keys create --tenant bench 2>>"$work/api.log" | tail -1)
[ -n "$key" ] || die "no API key"
auth=(-H "Authorization: Bearer $key")

VOXQ_BENCH_NOOP_TRANSCRIBE=true "$worker_bin" run >"$work/worker.log" 2>&1 &
worker_pid=$!; pids+=("$worker_pid")

# The fixture goes to S3 once, through the API; its job is the smoke test of the path.
smoke=$(curl -fsS "${auth[@]}" -F "file=@$fixture" "$base/v1/jobs") || die "multipart upload failed"
smoke_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$smoke")
audio_url=$(sql -c "SELECT source FROM jobs WHERE id = '$smoke_id'")
[[ "$audio_url" == s3://* ]] || die "unexpected source '$audio_url'"
status=""
for _ in $(seq 600); do
  status=$(curl -fsS "${auth[@]}" "$base/v1/jobs/$smoke_id" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = completed ] || [ "$status" = failed ] && break
  kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$work/worker.log" >&2; die "voxq-worker exited"; }
  sleep 0.1
done
[ "$status" = completed ] || { tail -20 "$work/worker.log" >&2; die "smoke job $smoke_id is '$status', not completed"; }
body="{\"audio_url\":\"$audio_url\"}"
log "API on $base, queue prefix $prefix, audio_url $audio_url; smoke job completed"

settings="interactive_concurrency=${VOXQ_INTERACTIVE_CONCURRENCY:-2(default)} queue_fetch_batch=${VOXQ_QUEUE_FETCH_BATCH:-0(default)} poll_interval_ms=${VOXQ_POLL_INTERVAL_MS:-100(default)} db_max_connections=${VOXQ_DATABASE_MAX_CONNECTIONS:-16(default)} log=${VOXQ_LOG:-info(default)}"
rows=()
# The machine is shared: bench/cpu_share.py measures, per phase, the CPU that processes
# other than this benchmark's used (other builds and test runs lower the figures).
foreign=()
cpu_mark() { python3 bench/cpu_share.py snap "$work/cpu.$1.before"; }
cpu_done() { # cpu_done PHASE: sets cpu_note to "other load N%[ (top users)]" for the notes
  local out pct top
  python3 bench/cpu_share.py snap "$work/cpu.$1.after"
  out=$(python3 bench/cpu_share.py diff "$work/cpu.$1.before" "$work/cpu.$1.after" --root $$ --db "$VOXQ_TEST_DATABASE")
  pct=$(sed -n 's/.*foreign_pct=\([0-9]*\).*/\1/p' <<<"$out"); top=$(sed -n 's/.*top=\(.*\)/\1/p' <<<"$out")
  [ "$pct" -lt 10 ] || foreign+=("$1 ${pct}% ($top)")
  if [ "$pct" -lt 3 ]; then cpu_note="other load ${pct}%"; else cpu_note="other load ${pct}% ($top)"; fi
}
row() { rows+=("$(printf '%-44s %16s %9s %9s %9s  %s' "$@")"); }

jfield() { # jfield FILE EXPR: a value from loadgen's JSON, EXPR in Python over `o`
  python3 -c 'import json, sys; o = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

loadgen() { python3 bench/loadgen.py --url "$base/v1/jobs" --key "$key" --body "$body" "$@"; }

# e2e NAME IDS_FILE: waits until every job in IDS_FILE is finished, then leaves
# "jobs completed failed jobs_per_s p50_ms p95_ms p99_ms retries" in $work/NAME.e2e.
e2e() {
  local name=$1 ids=$2 n finished deadline
  n=$(wc -l <"$ids")
  sql -c "CREATE TABLE bench_$name (id uuid PRIMARY KEY)" -c "\\copy bench_$name FROM '$ids'"
  deadline=$(( $(date +%s) + 120 + n / 5 ))
  while :; do
    finished=$(sql -c "SELECT count(*) FROM jobs JOIN bench_$name USING (id) WHERE status IN ('completed', 'failed')")
    [ "$finished" -ge "$n" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || { log "$name: only $finished of $n jobs finished in time"; break; }
    kill -0 "$worker_pid" 2>/dev/null || die "voxq-worker exited"
    sleep 0.2
  done
  sql -F ' ' >"$work/$name.e2e" <<SQL
SELECT count(*),
       count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE status = 'failed'),
       round((count(*) FILTER (WHERE status = 'completed')
              / extract(epoch FROM max(finished_at) FILTER (WHERE status = 'completed') - min(created_at)))::numeric, 1),
       round((percentile_cont(0.50) WITHIN GROUP (ORDER BY ms) FILTER (WHERE status = 'completed'))::numeric, 1),
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) FILTER (WHERE status = 'completed'))::numeric, 1),
       round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FILTER (WHERE status = 'completed'))::numeric, 1),
       coalesce(sum(attempts - 1) FILTER (WHERE attempts > 1), 0)
FROM (SELECT j.status, j.created_at, j.finished_at, j.attempts,
             extract(epoch FROM j.finished_at - j.created_at) * 1000 AS ms
      FROM jobs j JOIN bench_$name USING (id)) t
SQL
  cat "$work/$name.e2e" >&2
}

# --- 2a. enqueue -> completed, burst ---
cpu_mark burst
log "enqueue->completed burst: $e2e_jobs jobs, $submit_conns submitting connections"
loadgen --count "$e2e_jobs" --connections "$submit_conns" --ids-out "$work/burst.ids" >"$work/burst.submit.json"
cat "$work/burst.submit.json" >&2
e2e burst "$work/burst.ids"
cpu_done burst; cpu_burst=$cpu_note
read -r b_jobs b_done b_failed b_rate b_p50 b_p95 b_p99 b_retries <"$work/burst.e2e"
row "enqueue->completed, burst of $e2e_jobs" "$b_rate jobs/s" "$b_p50" "$b_p95" "$b_p99" \
  "$cpu_burst; $b_done/$b_jobs completed, $b_failed failed, $b_retries retries; submitted at $(jfield "$work/burst.submit.json" 'o["ok_rate"]') req/s (latency includes the backlog)"

# --- 2b. enqueue -> completed, paced at half the burst throughput ---
cpu_mark paced
paced_rate=$(python3 -c "import sys; print(max(1, int(float(sys.argv[1]) / 2)))" "${b_rate:-2}")
paced_n=$(( paced_rate * paced_s ))
[ "$paced_n" -le "$e2e_jobs" ] || paced_n=$e2e_jobs
log "enqueue->completed paced: $paced_n jobs at $paced_rate/s"
loadgen --rate "$paced_rate" --count "$paced_n" --connections "$submit_conns" --ids-out "$work/paced.ids" >"$work/paced.submit.json"
cat "$work/paced.submit.json" >&2
e2e paced "$work/paced.ids"
cpu_done paced; cpu_paced=$cpu_note
read -r p_jobs p_done p_failed p_rate p_p50 p_p95 p_p99 p_retries <"$work/paced.e2e"
row "enqueue->completed, paced at $paced_rate/s" "$p_rate jobs/s" "$p_p50" "$p_p95" "$p_p99" \
  "$cpu_paced; $p_done/$p_jobs completed, $p_failed failed, $p_retries retries; offered $(jfield "$work/paced.submit.json" 'o["offered_rate"]') req/s"

# --- 3. POST /v1/jobs alone: stop the worker ---
stop_pid "$worker_pid"
# Fresh planner statistics, as autovacuum takes them at some moment anyway: the plans of
# the job updates depend on the share of queued jobs they show, and leaving their timing
# to chance made the POST figures of otherwise equal runs differ up to 3x.
sql -c "ANALYZE jobs"
log "worker stopped; POST /v1/jobs load against the API alone"

cpu_mark wrk
log "wrk: 1 thread, $wrk_conns connections, $wrk_duration"
BENCH_KEY="$key" BENCH_AUDIO_URL="$audio_url" \
  wrk -t1 -c"$wrk_conns" -d"$wrk_duration" --latency -s bench/post_job.lua "$base/v1/jobs" | tee "$work/wrk.out" >&2
cpu_done wrk; cpu_wrk=$cpu_note
wrk_line=$(grep '^WRK_RESULT' "$work/wrk.out") || die "wrk printed no result"
wv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$wrk_line"; }
row "POST /v1/jobs, wrk closed loop -c$wrk_conns $wrk_duration" "$(wv rps) req/s" "$(wv p50_ms)" "$(wv p95_ms)" "$(wv p99_ms)" \
  "$cpu_wrk; $(wv requests) requests, non-2xx $(wv non2xx), socket errors $(wv sockerr), max $(wv max_ms) ms"

cpu_mark open-loop
log "open loop: $rate req/s for $rate_s s, up to $rate_conns connections"
loadgen --rate "$rate" --duration "$rate_s" --connections "$rate_conns" >"$work/rate.json"
cpu_done open-loop; cpu_rate=$cpu_note
cat "$work/rate.json" >&2
r_sent=$(jfield "$work/rate.json" 'o["sent"]'); r_ok=$(jfield "$work/rate.json" 'o["ok"]')
r_offered=$(jfield "$work/rate.json" 'o["offered_rate"]')
r_lag=$(jfield "$work/rate.json" 'o["client_lag_ms"]["p99"]')
r_verdict=$(python3 - "$r_offered" "$rate" "$r_lag" <<'PY'
import sys
offered, target, lag = map(float, sys.argv[1:])
if offered < 0.98 * target:
    print(f"NOT VALID: the generator offered only {offered:.0f} of {target:.0f} req/s")
elif lag >= 5:
    print("generator lagging (its lag is inside the latencies: they are pessimistic)")
else:
    print("rate held")
PY
)
row "POST /v1/jobs, open loop at $rate/s ${rate_s}s" "$(jfield "$work/rate.json" 'o["ok_rate"]') req/s" \
  "$(jfield "$work/rate.json" 'o["latency_ms"]["p50"]')" "$(jfield "$work/rate.json" 'o["latency_ms"]["p95"]')" \
  "$(jfield "$work/rate.json" 'o["latency_ms"]["p99"]')" \
  "$cpu_rate; $r_ok/$r_sent 2xx, errors $(jfield "$work/rate.json" 'o["errors"] or 0'), offered $r_offered req/s, generator lag p99 $r_lag ms: $r_verdict"

# --- 3c. POST /v1/batches: many jobs per request ---
manifest() { # manifest N FILE: N JSONL items naming the uploaded fixture
  python3 - "$1" "$audio_url" >"$2" <<'PY'
import json, sys
n, url = int(sys.argv[1]), sys.argv[2]
sys.stdout.write("".join(json.dumps({"audio_url": url, "custom_id": f"m{i}"}) + "\n" for i in range(n)))
PY
}
manifest "$batch_items" "$work/batch.jsonl"
for lane in bulk interactive; do
  cpu_mark "batch-$lane"
  best=0; times=()
  for i in $(seq "$batch_repeat"); do
    out=$(curl -sS -o "$work/batch.$lane.$i.json" -w '%{http_code} %{time_total}' "${auth[@]}" \
      -H 'Content-Type: application/x-ndjson' --data-binary @"$work/batch.jsonl" "$base/v1/batches?lane=$lane")
    read -r code secs <<<"$out"
    [ "$code" = 202 ] || { cat "$work/batch.$lane.$i.json" >&2; die "POST /v1/batches answered $code"; }
    rate=$(python3 -c "print(round($batch_items / $secs))")
    times+=("${secs}s")
    [ "$rate" -gt "$best" ] && best=$rate
  done
  cpu_done "batch-$lane"
  if [ "$lane" = bulk ]; then what="stored in PostgreSQL"; else what="stored and pushed to Redis"; fi
  row "POST /v1/batches, $batch_items items, lane $lane" "$best jobs/s" "-" "-" "-" \
    "$cpu_note; best of $batch_repeat requests (${times[*]}), $what"
done
# The interactive batches are in Redis now and the bulk ones wait for a dispatcher:
# neither may reach the fairness measurement's worker.
sql -c "UPDATE jobs SET status = 'cancelled' WHERE status = 'queued'" -c "UPDATE batches SET status = 'cancelled' WHERE status = 'running'"
redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$prefix:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null

# --- 4. redis-benchmark, the peer reference ---
cpu_mark redis-benchmark
for k in "key:__rand_int__" mylist; do
  [ "$(redis-cli -h 127.0.0.1 -p 6379 -n "$redis_db" exists "$k")" = 0 ] && redis_keys_new+=("$k")
done
for pipeline in 1 16; do
  log "redis-benchmark -n 100000 -t set,lpush,rpop -P $pipeline (db $redis_db)"
  redis-benchmark -h 127.0.0.1 -p 6379 --dbnum "$redis_db" -n 100000 -t set,lpush,rpop -P "$pipeline" --csv >"$work/redis-$pipeline.csv"
  while IFS=, read -r test rps _avg _min p50 p95 p99 max; do
    [ "$test" = '"test"' ] && continue
    strip() { tr -d '"' <<<"$1"; }
    row "redis-benchmark $(strip "$test") -P $pipeline -c 50" "$(strip "$rps") req/s" "$(strip "$p50")" "$(strip "$p95")" "$(strip "$p99")" "max $(strip "$max") ms"
  done <"$work/redis-$pipeline.csv"
done
cpu_done redis-benchmark
rows+=("    (redis-benchmark: $cpu_note)")

# --- 5. fairness of the bulk lane ---
export VOXQ_BULK_CONCURRENCY=${VOXQ_BULK_CONCURRENCY:-4} VOXQ_BULK_QUEUE_DEPTH=${VOXQ_BULK_QUEUE_DEPTH:-8}
VOXQ_BENCH_NOOP_TRANSCRIBE=true "$worker_bin" run >"$work/worker2.log" 2>&1 &
worker_pid=$!; pids+=("$worker_pid")
key_b=$("$api_bin" keys create --tenant bench-b 2>>"$work/api.log" | tail -1)
smoke_b=$(curl -fsS -H "Authorization: Bearer $key_b" -F "file=@$fixture" "$base/v1/jobs") || die "upload as B failed"
url_b=$(sql -c "SELECT source FROM jobs WHERE id = '$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$smoke_b")'")
manifest "$fair_backlog" "$work/fair-a.jsonl"
cpu_mark fairness
a_batch=$(curl -fsS "${auth[@]}" -H 'Content-Type: application/x-ndjson' --data-binary @"$work/fair-a.jsonl" "$base/v1/batches" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 1200); do
  [ "$(sql -c "SELECT count(*) FROM jobs WHERE batch_id = '$a_batch' AND status = 'completed'")" -ge 100 ] && break
  sleep 0.1
done
b_batch=$(python3 -c "
import json
print(''.join(json.dumps({'audio_url': '$url_b', 'custom_id': f'b{i}'}) + '\n' for i in range(5)))" \
  | curl -fsS -H "Authorization: Bearer $key_b" -H 'Content-Type: application/x-ndjson' --data-binary @- "$base/v1/batches" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 1200); do
  [ "$(sql -c "SELECT count(*) FROM jobs WHERE batch_id = '$b_batch' AND status = 'completed'")" -ge 5 ] && break
  sleep 0.1
done
cpu_done fairness
read -r f_between f_wait_ms f_left f_svc_ms <<<"$(sql -F ' ' <<SQL
WITH b AS (SELECT (SELECT created_at FROM batches WHERE id = '$b_batch') AS submitted,
                  (SELECT max(started_at) FROM jobs WHERE batch_id = '$b_batch') AS last_start),
     a AS (SELECT count(*) AS done, extract(epoch FROM max(finished_at) - min(started_at)) * 1000 AS span
           FROM jobs WHERE batch_id = '$a_batch' AND status = 'completed')
SELECT (SELECT count(*) FROM jobs, b WHERE batch_id = '$a_batch' AND started_at > b.submitted AND started_at <= b.last_start),
       round((extract(epoch FROM b.last_start - b.submitted) * 1000)::numeric),
       (SELECT count(*) FROM jobs WHERE batch_id = '$a_batch' AND status = 'queued'),
       round((a.span / greatest(a.done, 1) * $VOXQ_BULK_CONCURRENCY)::numeric, 1)
FROM a, b
SQL
)"
row "fairness: B's 5 jobs behind A's $fair_backlog" "$f_between A-jobs" "-" "-" "-" \
  "$cpu_note; B's last job started $f_wait_ms ms after B submitted (A's job service time ~$f_svc_ms ms at concurrency $VOXQ_BULK_CONCURRENCY, depth $VOXQ_BULK_QUEUE_DEPTH); A still had $f_left queued"
curl -fsS -X POST "${auth[@]}" "$base/v1/batches/$a_batch/cancel" >/dev/null

# --- 6. long-poll: enqueue -> result visible ---
stop_pid "$worker_pid"
VOXQ_POLL_INTERVAL_MS=${VOXQ_POLL_INTERVAL_MS:-10} VOXQ_BENCH_NOOP_TRANSCRIBE=true "$worker_bin" run >"$work/worker3.log" 2>&1 &
worker_pid=$!; pids+=("$worker_pid")
cpu_mark longpoll
python3 bench/longpoll.py --url "$base" --key "$key" --audio-url "$audio_url" --count "$longpoll_jobs" >"$work/longpoll.json"
cpu_done longpoll
cat "$work/longpoll.json" >&2
row "enqueue->visible via long-poll, 1 at a time" "$(jfield "$work/longpoll.json" 'o["completed"]')/$(jfield "$work/longpoll.json" 'o["n"]') done" \
  "$(jfield "$work/longpoll.json" 'o["p50_ms"]')" "$(jfield "$work/longpoll.json" 'o["p90_ms"]') (p90)" "$(jfield "$work/longpoll.json" 'o["p99_ms"]')" \
  "$cpu_note; POST then GET ?wait=30 on one connection, worker poll interval ${VOXQ_POLL_INTERVAL_MS:-10} ms; goal p50 <= 25, p99 <= 100"

# --- summary ---
echo
echo "== voxq load benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)); load generators on the same machine"
echo "   binaries (dev profile): $(for b in "$api_bin" "$worker_bin"; do printf '%s %s; ' "${b##*/}" "$(date -u -r "$b" +%Y-%m-%dT%H:%M:%SZ)"; done)git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "   worker: no-op transcription (fetches from moto S3, stores an empty result); $settings"
printf '%-44s %16s %9s %9s %9s  %s\n' "test" "throughput" "p50 ms" "p95 ms" "p99 ms" "notes"
printf '%s\n' "${rows[@]}"
if [ ${#foreign[@]} -gt 0 ]; then
  echo "WARNING: other processes used >= 10% of the machine during: ${foreign[*]}; those figures are low, run again on a quiet machine"
fi
