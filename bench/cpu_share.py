#!/usr/bin/env python3
"""How much of the machine's CPU something else used during a benchmark phase.

The benchmark shares its machine (other builds and test runs), and on 2 cores any of it
lowers the figures. Take a snapshot before and after a phase:

  cpu_share.py snap FILE
  cpu_share.py diff BEFORE AFTER --root PID --db DBNAME

`diff` prints "foreign_pct=N top=comm:secs,...": the CPU time used during the phase by
processes that are NOT the benchmark's, as a percentage of the machine's capacity
(elapsed x cores). The benchmark's processes are: PID (the script, whose reaped children
are in its cumulative times) and its descendants; the PostgreSQL backends of database
DBNAME; and the shared servers it drives (redis-server, moto_server, PostgreSQL's own
background processes), counted as the benchmark's although others may use them too.
Everything else that ran (including processes that started and ended within the phase,
seen through the machine-wide counters of /proc/stat) is foreign.
"""

import argparse
import json
import os
import re
import time

BACKEND = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]|::1\(\d+\)")


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return sum(v[:8]) - v[3] - v[4]


def processes():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        r = stat.rindex(")")
        comm = stat[stat.index("(") + 1 : r]
        fields = stat[r + 2 :].split()
        # after the comm: state ppid ... utime(12) stime(13) cutime(14) cstime(15) ... starttime(20)
        out[f"{d}:{fields[19]}"] = {
            "pid": int(d),
            "ppid": int(fields[1]),
            "comm": comm,
            "cmd": cmd[:160],
            # with the reaped children's times (the script's finished commands are there)
            "ticks": sum(int(x) for x in fields[11:15]),
            "own": int(fields[11]) + int(fields[12]),
        }
    return out


def snap(path):
    with open(path, "w") as f:
        json.dump({"t": time.monotonic(), "busy": machine_busy(), "procs": processes()}, f)


def ours(procs, root, db):
    parent = {p["pid"]: p["ppid"] for p in procs.values()}

    def under_root(pid):
        seen = 0
        while pid > 1 and seen < 64:
            if pid == root:
                return True
            pid = parent.get(pid, 0)
            seen += 1
        return False

    keys = set()
    for k, p in procs.items():
        cmd = p["cmd"]
        if under_root(p["pid"]):
            keys.add(k)
        elif p["comm"] in ("redis-server", "moto_server"):
            keys.add(k)
        elif cmd.startswith("postgres") or "/postgres " in cmd or p["comm"] == "postgres":
            # A backend serves one client's database; background processes serve all.
            if not BACKEND.search(cmd) or f" {db} " in cmd:
                keys.add(k)
    return keys


def diff(before, after, root, db):
    with open(before) as f:
        a = json.load(f)
    with open(after) as f:
        b = json.load(f)
    hz = os.sysconf("SC_CLK_TCK")
    cores = os.cpu_count() or 1
    elapsed = max(b["t"] - a["t"], 1e-6)
    busy = (b["busy"] - a["busy"]) / hz
    mine = ours(b["procs"], root, db)
    used = lambda k: (b["procs"][k]["ticks"] - a["procs"].get(k, {"ticks": 0})["ticks"]) / hz
    ours_s = sum(used(k) for k in mine)
    foreign_s = max(0.0, busy - ours_s)
    # The biggest foreign users among processes alive at the end, by their own time only
    # (a parent's reaped-children time would name the parent instead of the worker).
    by_comm = {}
    for k, p in b["procs"].items():
        if k not in mine:
            own = (p["own"] - a["procs"].get(k, {"own": 0})["own"]) / hz
            by_comm[p["comm"]] = by_comm.get(p["comm"], 0.0) + own
    top = sorted(((s, c) for c, s in by_comm.items() if s >= 0.05), reverse=True)[:4]
    print(
        f"foreign_pct={100 * foreign_s / (elapsed * cores):.0f} "
        f"top={','.join(f'{c}:{s:.1f}s' for s, c in top) or '-'}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snap")
    s.add_argument("file")
    d = sub.add_parser("diff")
    d.add_argument("before")
    d.add_argument("after")
    d.add_argument("--root", type=int, required=True)
    d.add_argument("--db", required=True)
    args = p.parse_args()
    if args.cmd == "snap":
        snap(args.file)
    else:
        diff(args.before, args.after, args.root, args.db)


if __name__ == "__main__":
    main()
