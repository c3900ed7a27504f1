#!/usr/bin/env bash
# EXPLAIN ANALYZE of the sweeper's queries on a jobs table of N rows (default 1,000,000):
# shows that a sweep reads only the rows it returns, whatever the table's size.
#   bench/sweep-explain.sh [N]
# Uses the local PostgreSQL (127.0.0.1:5432, trust auth) and a throwaway database.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
db=voxq_sweep_bench_$$
psql_() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE $db" >/dev/null
trap 'psql_ -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
for m in migrations/*.sql; do psql_ -d "$db" -f "$m" >/dev/null; done
echo "filling jobs with $n rows (0.1% queued, 0.1% processing, the rest finished; about 40% of the running ones lost)..." >&2
psql_ -d "$db" <<SQL
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'bench');
INSERT INTO jobs (id, tenant_id, status, lane, source, attempts, created_at, enqueued_at, updated_at, finished_at)
SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001',
       CASE WHEN i % 1000 = 0 THEN 'queued' WHEN i % 1000 = 1 THEN 'processing'
            WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END,
       CASE WHEN i % 3 = 0 THEN 'bulk' ELSE 'interactive' END,
       's3://b/k' || i, 1,
       now() - (i || ' seconds')::interval,
       CASE WHEN i % 2000 = 0 THEN NULL ELSE now() - (i || ' seconds')::interval END,
       now() - ((i % 10) || ' seconds')::interval,
       now() - (i || ' seconds')::interval
FROM generate_series(1, $n) AS i;
VACUUM ANALYZE jobs;
-- Running jobs were touched within the last 10 s; those older than 6 s are lost runs.
UPDATE jobs SET updated_at = now() - random() * interval '10 seconds' WHERE status = 'processing';
VACUUM ANALYZE jobs;
SQL
psql_ -d "$db" -At -c "SELECT status, count(*) FROM jobs GROUP BY 1 ORDER BY 1" >&2
explain() { echo; echo "== $1"; psql_ -d "$db" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $2"; }
# The queries of shared/src/db.rs (jobs_to_enqueue, recover_lost_runs), parameters
# filled in: 600 s stale, 6 s lost, max_attempts 5, batches of 1,000.
explain "queued jobs never pushed, or pushed long ago (jobs_to_enqueue)" "
(SELECT id, lane, attempts FROM jobs
  WHERE status = 'queued' AND enqueued_at IS NULL
  ORDER BY enqueued_at NULLS FIRST LIMIT 1000)
UNION ALL
(SELECT id, lane, attempts FROM jobs
  WHERE status = 'queued' AND enqueued_at < now() - make_interval(secs => 600)
  ORDER BY enqueued_at NULLS FIRST LIMIT 1000)"
explain "lost runs (recover_lost_runs, its row selection; the row locks end with the statement)" "
SELECT id FROM jobs
WHERE status = 'processing' AND updated_at < now() - make_interval(secs => 6)
ORDER BY updated_at LIMIT 1000
FOR UPDATE SKIP LOCKED"
