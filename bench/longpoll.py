#!/usr/bin/env python3
"""Enqueue -> result visible through long-poll, one job at a time.

For each job: POST /v1/jobs (JSON audio_url), then GET /v1/jobs/{id}?wait=30 on the same
keep-alive connection; the latency is from sending the POST to reading the answer that
says `completed`. Prints one JSON object: n, completed, with_text (completed jobs whose
transcript has text), cached (completed jobs whose transcript came from the cache),
p50/p90/p95/p99/max in ms. --ids-out writes the measured jobs' ids, one a line.

    bench/longpoll.py --url http://127.0.0.1:8080 --key vxq_... --audio-url s3://... [--count 300]
        [--warmup 10] [--ids-out FILE]
"""
import argparse
import http.client
import json
import statistics
import time
import urllib.parse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--audio-url", required=True)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--ids-out")
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    body = json.dumps({"audio_url": args.audio_url, "tasks": ["transcribe"]})
    lat, completed, with_text, cached, ids = [], 0, 0, 0, []
    for i in range(args.warmup + args.count):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/jobs", body=body, headers=headers)
        r = conn.getresponse()
        job = json.loads(r.read())
        if r.status != 202:
            raise SystemExit(f"POST answered {r.status}: {job}")
        conn.request("GET", f"/v1/jobs/{job['id']}?wait=30", headers=headers)
        r = conn.getresponse()
        view = json.loads(r.read())
        t1 = time.perf_counter()
        if i < args.warmup:
            continue
        ids.append(job["id"])
        if view.get("status") == "completed":
            completed += 1
            result = view.get("result") or {}
            with_text += bool((result.get("text") or "").strip())
            cached += any(isinstance(st, dict) and st.get("cached") for st in (result.get("usage") or {}).values())
        lat.append((t1 - t0) * 1000)
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    if args.ids_out:
        with open(args.ids_out, "w") as f:
            f.write("".join(i + "\n" for i in ids))
    print(json.dumps({
        "n": len(lat), "completed": completed, "with_text": with_text, "cached": cached,
        "p50_ms": round(q[49], 1), "p90_ms": round(q[89], 1), "p95_ms": round(q[94], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(lat[-1], 1),
    }))


if __name__ == "__main__":
    main()
