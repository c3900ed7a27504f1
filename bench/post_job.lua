-- wrk script: POST /v1/jobs with a JSON audio_url, Bearer key from the environment.
--
--   BENCH_KEY=... BENCH_AUDIO_URL=s3://bucket/key \
--     wrk -t1 -c32 -d15s --latency -s bench/post_job.lua http://127.0.0.1:PORT/v1/jobs
--
-- done() prints one machine-readable line:
--   WRK_RESULT requests=N duration_s=S rps=R non2xx=N sockerr=N p50_ms=.. p90_ms=.. p95_ms=.. p99_ms=.. max_ms=..
-- wrk counts answers outside 2xx/3xx as "non-2xx" (summary.errors.status); every job
-- creation answers 202, so any non2xx is a failed request.

local key = os.getenv("BENCH_KEY")
local audio_url = os.getenv("BENCH_AUDIO_URL")
if not key or not audio_url then
  error("set BENCH_KEY and BENCH_AUDIO_URL")
end

wrk.method = "POST"
wrk.body = string.format('{"audio_url":"%s"}', audio_url)
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

function done(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  -- latency values are microseconds
  local function ms(us) return string.format("%.2f", us / 1000) end
  io.write(string.format(
    "WRK_RESULT requests=%d duration_s=%.2f rps=%.1f non2xx=%d sockerr=%d p50_ms=%s p90_ms=%s p95_ms=%s p99_ms=%s max_ms=%s\n",
    summary.requests, s, summary.requests / s, e.status,
    e.connect + e.read + e.write + e.timeout,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(95)),
    ms(latency:percentile(99)), ms(latency.max)))
end
