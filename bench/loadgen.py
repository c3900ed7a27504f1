#!/usr/bin/env python3
"""HTTP/1.1 load generator for POST /v1/jobs, standard library only (asyncio + raw sockets).

Two modes:

  open loop   --rate R: request i is due at start + i/R, whatever happened to the ones
              before it (wrk cannot do this). Latency is measured from the DUE time, so
              waiting for a free connection or a generator that fell behind counts against
              the server instead of silently thinning the load (no coordinated omission).
              The generator's own lag (task start - due) is reported separately: if it is
              large, the rate was not really offered and the run says so.
  closed loop --rate 0: --connections workers each send the next request when the last
              answer arrived (as fast as the server takes them).

Stops after --count requests, or after --duration seconds. Keep-alive connections, one
request in flight per connection; in open-loop mode a connection is opened on demand
(up to --connections) when every open one is busy.

Prints one JSON object: sent, ok (2xx), errors by status/kind, the achieved rate, and
p50/p90/p95/p99/max latency in ms. With --ids-out, writes the "id" of every 2xx response
body (one per line), so the caller can find those jobs in the database.
"""

import argparse
import asyncio
import json
import math
import sys
import time
from urllib.parse import urlsplit


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (the value below which p% fall)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer


class Client:
    def __init__(self, url, key, body, timeout):
        u = urlsplit(url)
        if u.scheme != "http":
            raise SystemExit("only http:// URLs")
        self.host, self.port = u.hostname, u.port or 80
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        payload = body.encode()
        self.request = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {u.netloc}\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "\r\n"
        ).encode() + payload
        self.timeout = timeout

    async def connect(self):
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return Conn(reader, writer)

    async def send(self, conn):
        """One request on conn; returns (status, body, keep_alive)."""
        conn.writer.write(self.request)
        await conn.writer.drain()
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await conn.reader.readuntil(b"\r\n")  # no trailers expected
                    break
                body += await conn.reader.readexactly(size)
                await conn.reader.readexactly(2)
            body = bytes(body)
        else:
            body = await conn.reader.readexactly(int(headers.get("content-length", "0")))
        keep_alive = headers.get("connection", "").lower() != "close"
        return status, body, keep_alive


class Run:
    def __init__(self, args):
        self.args = args
        self.client = Client(args.url, args.key, args.body, args.timeout)
        self.latencies = []  # seconds, from due time (open loop) or send time (closed loop)
        self.service = []  # seconds, from writing the request to the end of the answer
        self.lag = []  # open loop: request task start - due (the generator's own lateness)
        self.statuses = {}
        self.errors = {}
        self.ids = []
        self.sent = 0
        self.idle = []  # open connections not in use
        self.open = 0
        self.freed = asyncio.Condition()

    def record(self, due, sent_at, status, body):
        now = time.perf_counter()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.latencies.append(now - due)
            self.service.append(now - sent_at)
            if self.args.ids_out:
                try:
                    self.ids.append(json.loads(body)["id"])
                except (ValueError, KeyError, TypeError):
                    self.errors["no-id-in-body"] = self.errors.get("no-id-in-body", 0) + 1

    def fail(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def one(self, conn, due):
        """Sends one request on conn; returns conn if it can be reused."""
        sent_at = time.perf_counter()
        try:
            status, body, keep_alive = await asyncio.wait_for(
                self.client.send(conn), self.args.timeout
            )
        except asyncio.TimeoutError:
            self.fail("timeout")
            conn.writer.close()
            return None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.fail(type(e).__name__)
            conn.writer.close()
            return None
        self.record(due, sent_at, status, body)
        if not keep_alive:
            conn.writer.close()
            return None
        return conn

    # --- open loop ---

    async def acquire(self):
        async with self.freed:
            while True:
                if self.idle:
                    return self.idle.pop()
                if self.open < self.args.connections:
                    self.open += 1
                    break
                await self.freed.wait()
        try:
            return await self.client.connect()
        except OSError as e:
            async with self.freed:
                self.open -= 1
                self.freed.notify()
            raise e

    async def release(self, conn):
        async with self.freed:
            if conn is None:
                self.open -= 1
            else:
                self.idle.append(conn)
            self.freed.notify()

    async def scheduled(self, due):
        self.lag.append(time.perf_counter() - due)
        try:
            conn = await self.acquire()
        except OSError as e:
            self.fail("connect-" + type(e).__name__)
            return
        await self.release(await self.one(conn, due))

    async def open_loop(self):
        a = self.args
        # Open the connections up front so the first second does not pay for handshakes.
        for _ in range(min(a.connections, a.preopen)):
            self.idle.append(await self.client.connect())
            self.open += 1
        interval = 1.0 / a.rate
        total = a.count if a.count else int(a.duration * a.rate)
        tasks = set()
        start = time.perf_counter()
        for i in range(total):
            due = start + i * interval
            delay = due - time.perf_counter()
            # Behind schedule: still yield, so the requests already due get sent.
            await asyncio.sleep(max(delay, 0))
            t = asyncio.create_task(self.scheduled(due))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            self.sent += 1
        offered_s = time.perf_counter() - start
        if tasks:
            await asyncio.wait(tasks)
        return start, offered_s

    # --- closed loop ---

    async def closed_worker(self, counter, deadline):
        conn = None
        while True:
            if counter[0] <= 0 or time.perf_counter() >= deadline:
                break
            counter[0] -= 1
            self.sent += 1
            if conn is None:
                try:
                    conn = await self.client.connect()
                except OSError as e:
                    self.fail("connect-" + type(e).__name__)
                    continue
            conn = await self.one(conn, time.perf_counter())
        if conn is not None:
            conn.writer.close()

    async def closed_loop(self):
        a = self.args
        counter = [a.count if a.count else 1 << 62]
        start = time.perf_counter()
        deadline = start + a.duration if not a.count else math.inf
        await asyncio.gather(*(self.closed_worker(counter, deadline) for _ in range(a.connections)))
        return start, time.perf_counter() - start

    async def main(self):
        a = self.args
        if a.rate > 0:
            start, offered_s = await self.open_loop()
        else:
            start, offered_s = await self.closed_loop()
        elapsed = time.perf_counter() - start
        for c in self.idle:
            c.writer.close()
        lat = sorted(self.latencies)
        svc = sorted(self.service)
        lag = sorted(self.lag)
        ms = lambda v: round(v * 1e3, 2)
        ok = len(lat)
        out = {
            "mode": "open-loop" if a.rate > 0 else "closed-loop",
            "target_rate": a.rate,
            "connections": a.connections,
            "sent": self.sent,
            "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "elapsed_s": round(elapsed, 3),
            # Rate at which requests were offered (open loop: by the schedule) and answered.
            "offered_rate": round(self.sent / offered_s, 1) if offered_s > 0 else None,
            "ok_rate": round(ok / elapsed, 1) if elapsed > 0 else None,
            "latency_ms": {f"p{p}": ms(percentile(lat, p)) for p in (50, 90, 95, 99)}
            | {"max": ms(lat[-1]) if lat else None},
            "service_ms": {f"p{p}": ms(percentile(svc, p)) for p in (50, 95, 99)},
        }
        if a.rate > 0:
            out["client_lag_ms"] = {f"p{p}": ms(percentile(lag, p)) for p in (50, 99)} | {
                "max": ms(lag[-1]) if lag else None
            }
            out["connections_opened"] = self.open
        if a.ids_out:
            with open(a.ids_out, "w") as f:
                f.writelines(i + "\n" for i in self.ids)
        print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True, help="API key (Bearer)")
    p.add_argument("--body", required=True, help="JSON request body")
    p.add_argument("--rate", type=float, default=0, help="requests/s (open loop); 0 = closed loop")
    p.add_argument("--duration", type=float, default=10, help="seconds (ignored with --count)")
    p.add_argument("--count", type=int, default=0, help="total requests")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--preopen", type=int, default=16, help="open loop: connections opened up front")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--ids-out", help="write the job id of each 2xx answer to this file")
    args = p.parse_args()
    asyncio.run(Run(args).main())


if __name__ == "__main__":
    sys.exit(main())
