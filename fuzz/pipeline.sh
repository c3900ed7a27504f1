#!/usr/bin/env bash
# Fuzzes the whole local pipeline (decode, silence gate, inference, scoring, summary,
# JSONL output), not only the decoder: mutates the committed fixtures into N files
# (fuzz/mutate.py) and runs them through the real `voxq-worker transcribe` binary in
# batches, one process per batch.
#
# The contract checked for every process: it exits 0 or 1 (never a signal, an abort, a
# panic exit 101, or a stall); it prints exactly one JSONL line per input file, in input
# order; every failed line has a non-empty `error_code` and `error`; exit 1 if and only
# if some line failed; its stderr holds no "panicked at". When a process crashes or
# stalls, the files it did not finish are re-run, the first unfinished one alone, until
# the culprit is found; culprits are copied to the findings directory with their stderr
# and a command that reproduces them.
#
# Usage: fuzz/pipeline.sh [N=10000] [SEED=1]
# Environment:
#   CARGO_TARGET_DIR      where the binary is (default ~/.cache/voxq-target; debug build)
#   VOXQ_WORKER           the binary itself (default $CARGO_TARGET_DIR/debug/voxq-worker)
#   VOXQ_MODEL_DIR        model (default models/whisper-tiny.en)
#   FUZZ_WORK             scratch directory, outside the repository
#                         (default ${TMPDIR:-/tmp}/voxq-fuzz-pipeline-SEED-N; emptied first)
#   FUZZ_FINDINGS         where culprits go (default /tmp/voxq-fuzz-findings)
#   FUZZ_BATCH            files per process (default 200)
#   FUZZ_STALL_S          no new result line for this long is a hang (default 600: a
#                         mutated minute of noise can take 100 s of CPU in temperature
#                         fallbacks, and the run is niced behind other work)
#   FUZZ_MAX_DURATION_S   --max-duration-s for the run (default 600, see below)
#   FUZZ_MEM_LIMIT_MB     address-space limit per process, in MiB (default 8192)
#
# A mutated rate field can make a 100 KB file decode to hours of audio. The product's
# limit is 4 h, and transcribing hours of noise is slow, not wrong; the campaign passes
# --max-duration-s 600 so such files end as `audio-too-long` and the run stays bounded.
# Exit status: 0 if the contract held for every file, 1 otherwise.
set -euo pipefail

N=${1:-10000}
SEED=${2:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}
BIN=${VOXQ_WORKER:-$TARGET/debug/voxq-worker}
MODEL_DIR=${VOXQ_MODEL_DIR:-$ROOT/models/whisper-tiny.en}
WORK=${FUZZ_WORK:-${TMPDIR:-/tmp}/voxq-fuzz-pipeline-$SEED-$N}
FINDINGS=${FUZZ_FINDINGS:-/tmp/voxq-fuzz-findings}
BATCH=${FUZZ_BATCH:-200}
STALL=${FUZZ_STALL_S:-600}
MAX_DURATION=${FUZZ_MAX_DURATION_S:-600}
MEM_LIMIT_MB=${FUZZ_MEM_LIMIT_MB:-8192}

die() { echo "pipeline.sh: $*" >&2; exit 2; }
[[ $N =~ ^[0-9]+$ && $N -gt 0 ]] || die "N must be a positive integer, not '$N'"
[[ $SEED =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, not '$SEED'"
[[ -x $BIN ]] || die "no binary at $BIN (build it with: cargo build -p voxq-worker)"
[[ -f $MODEL_DIR/model.bin ]] || die "no model in $MODEL_DIR"
WORK=$(realpath -m "$WORK")
case "$WORK/" in "$ROOT"/*) die "FUZZ_WORK must be outside the repository: $WORK" ;; esac

rm -rf "$WORK"
mkdir -p "$WORK/runs" "$FINDINGS"
RESULTS=$WORK/results.jsonl      # one record per input file, written by check()
FINDINGS_TSV=$WORK/findings.tsv  # kind, file, detail
: >"$RESULTS"
: >"$FINDINGS_TSV"
START=$SECONDS

python3 "$ROOT/fuzz/mutate.py" --count "$N" --seed "$SEED" --fixtures "$ROOT/fixtures" --out "$WORK"
find "$WORK/inputs" -type f | sort >"$WORK/all.txt"
split -d -a 4 -l "$BATCH" "$WORK/all.txt" "$WORK/runs/batch-"

RUN_ID=0
PEAK_KB=0
# Runs the files listed in $1 through one process. Sets RUN_DIR, RC, STALLED and RUN_KB.
# Callers silence its stderr: bash's "Aborted"/"Killed" notices repeat what check() says.
run() {
  local list=$1
  RUN_ID=$((RUN_ID + 1))
  RUN_DIR=$WORK/runs/run-$(printf %05d "$RUN_ID")
  mkdir -p "$RUN_DIR"
  cp "$list" "$RUN_DIR/files.txt"
  local files=()
  mapfile -t files <"$list"
  # nice and prlimit exec the binary, so $! is the worker's own pid.
  RUST_BACKTRACE=1 nice -n 10 prlimit --as=$((MEM_LIMIT_MB * 1024 * 1024)) -- \
    "$BIN" transcribe --format jsonl --threads 1 --model-dir "$MODEL_DIR" \
    --max-duration-s "$MAX_DURATION" "${files[@]}" \
    >"$RUN_DIR/out.jsonl" 2>"$RUN_DIR/err.txt" &
  local pid=$! lines=0 seen=0 last=$SECONDS kb
  STALLED=0
  RUN_KB=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n $kb && $kb -gt $RUN_KB ]] && RUN_KB=$kb
    lines=$(wc -l <"$RUN_DIR/out.jsonl")
    if ((lines > seen)); then
      seen=$lines
      last=$SECONDS
    elif ((SECONDS - last >= STALL)); then
      STALLED=1
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
  done
  RC=0
  wait "$pid" || RC=$?
  ((RUN_KB > PEAK_KB)) && PEAK_KB=$RUN_KB
  return 0
}

# Checks the last run against its file list; unless $1 is 0, appends a record per
# finished file to $RESULTS and per broken promise to $FINDINGS_TSV. Prints
# "<finished> <verdict>", where verdict is ok, crash (signal, abort, exit other than 0/1),
# hang, or panic ("panicked at" on stderr and no file failed for it).
check() {
  python3 - "$RUN_DIR" "$RC" "$STALLED" "${1:-1}" "$RESULTS" "$FINDINGS_TSV" <<'PY'
import json, re, sys
run_dir, rc, stalled, record, results_path, findings_path = sys.argv[1:]
rc, stalled, keep = int(rc), stalled == "1", record == "1"
files = open(f"{run_dir}/files.txt").read().splitlines()
lines = open(f"{run_dir}/out.jsonl", errors="replace").read().splitlines()
stderr = open(f"{run_dir}/err.txt", errors="replace").read()
records, findings = [], []
code_re = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
failed_lines = 0
for i, line in enumerate(lines):
    if i >= len(files):
        findings.append(("contract", files[-1], f"extra output line {i + 1}: {line[:200]}"))
        break
    try:
        obj = json.loads(line)
    except ValueError:
        # A half-written last line of a process that died is the crash, not a bad line.
        if i == len(lines) - 1 and (rc not in (0, 1) or stalled):
            break
        findings.append(("contract", files[i], f"line {i + 1} is not JSON: {line[:200]}"))
        records.append({"file": files[i], "status": "bad-line"})
        continue
    record = {"file": files[i]}
    if obj.get("file") != files[i]:
        findings.append(("contract", files[i], f"line {i + 1} names {obj.get('file')!r}"))
    error, code = obj.get("error"), obj.get("error_code")
    if error is None:
        record.update(status="ok", duration_s=obj.get("duration_s"))
        if not isinstance(obj.get("text"), str):
            findings.append(("contract", files[i], "a line without error has no text"))
    else:
        failed_lines += 1
        record.update(status="error", code=code, error=str(error)[:300])
        if not (isinstance(error, str) and error.strip()):
            findings.append(("contract", files[i], f"empty error message: {error!r}"))
        if not (isinstance(code, str) and code_re.match(code)):
            findings.append(("contract", files[i], f"error without a kebab-case code: {code!r}"))
    records.append(record)
finished = len(records)
if stalled:
    verdict = "hang"
elif rc in (0, 1):
    verdict = "ok"
    if finished < len(files):
        verdict = "crash"  # exited cleanly but dropped files: treat as a crash to isolate them
        findings.append(("contract", files[finished], f"exit {rc} after {finished} of {len(files)} lines"))
    elif (rc == 1) != (failed_lines > 0):
        findings.append(("contract", files[0], f"exit {rc} with {failed_lines} failed line(s)"))
else:
    verdict = "crash"
# The product catches panics in the decoder and the engine and fails that file
# (decoder-panic, or inference-failed with the panic's message); each still counts as a
# finding. A panic on stderr with no such line is found by bisection (verdict "panic").
panicked = "panicked at" in stderr
suspects = [r for r in records if "panic" in (r.get("code") or "")
            or (panicked and r.get("code") == "inference-failed")]
for r in suspects:
    findings.append(("caught-panic", r["file"], f"{r['code']}: {r['error']}"))
if panicked and not suspects and verdict == "ok":
    verdict = "panic"
if not keep:
    print(finished, verdict)
    sys.exit(0)
with open(results_path, "a") as out:
    for r in records:
        out.write(json.dumps(r) + "\n")
with open(findings_path, "a") as out:
    for kind, file, detail in findings:
        out.write(f"{kind}\t{file}\t{run_dir}\t{detail}\n")
print(finished, verdict)
PY
}

# Keeps a culprit: the file, the stderr of the run that showed it, and a reproducer.
keep_finding() {
  local kind=$1 file=$2 detail=$3 name
  name=$(basename "$file")
  cp "$file" "$FINDINGS/$name"
  cp "$RUN_DIR/err.txt" "$FINDINGS/$name.$kind.stderr"
  printf '%s\n' "RUST_BACKTRACE=1 $BIN transcribe --format jsonl --threads 1 --model-dir $MODEL_DIR --max-duration-s $MAX_DURATION $FINDINGS/$name" \
    >"$FINDINGS/$name.repro.sh"
  printf '%s\t%s\t%s\t%s\n' "$kind" "$file" "$RUN_DIR" "$detail" >>"$FINDINGS_TSV"
  [[ $kind == stderr-panic ]] || printf '{"file": "%s", "status": "%s"}\n' "$file" "$kind" >>"$RESULTS"
  echo "pipeline.sh: FINDING $kind: $name ($detail)" >&2
}

# Finds, by bisection, the files of list $1 that make the binary print "panicked at"
# without failing for it. Their results are already recorded; these runs only attribute.
bisect_panic() {
  local list=$1 n half part finished verdict
  n=$(wc -l <"$list")
  if ((n == 1)); then
    keep_finding stderr-panic "$(cat "$list")" "panicked at, no failed line"
    return 0
  fi
  half=$((n / 2))
  head -n "$half" "$list" >"$list.a"
  tail -n +"$((half + 1))" "$list" >"$list.b"
  for part in "$list.a" "$list.b"; do
    run "$part" 2>/dev/null
    read -r finished verdict < <(check 0)
    grep -q "panicked at" "$RUN_DIR/err.txt" && bisect_panic "$part"
  done
  return 0
}

# Runs every file of list $1 and accounts for each exactly once. After a crash or stall,
# the files that did not finish are re-run with the first of them alone: output is in input
# order, so it is the likeliest culprit; if it passes alone, the rest are run again (each
# round finishes at least one file, so this ends).
process() {
  local list=$1 finished verdict rest first pending=""
  while [[ -s $list ]]; do
    run "$list" 2>/dev/null
    read -r finished verdict < <(check)
    [[ $verdict == ok ]] && break
    if [[ $verdict == panic ]]; then
      echo "pipeline.sh: run $RUN_ID: \"panicked at\" on stderr, no file failed for it; bisecting" >&2
      bisect_panic "$RUN_DIR/files.txt"
      break
    fi
    if ((RUN_ID == 1 && finished == 0 && RC == 2)); then
      cat "$RUN_DIR/err.txt" >&2
      die "the first run failed to start (exit 2); see above"
    fi
    local why="exit $RC"
    ((RC > 128)) && why="signal $((RC - 128))"
    ((STALLED)) && why="no output for ${STALL}s"
    pending="$verdict	$RUN_DIR	$why"
    rest=$WORK/runs/rest-$RUN_ID.txt
    tail -n +"$((finished + 1))" "$RUN_DIR/files.txt" >"$rest"
    first=$(head -n 1 "$rest")
    echo "pipeline.sh: run $RUN_ID: $verdict ($why) after $finished of $(wc -l <"$RUN_DIR/files.txt") files; isolating" >&2
    printf '%s\n' "$first" >"$WORK/runs/alone-$RUN_ID.txt"
    run "$WORK/runs/alone-$RUN_ID.txt" 2>/dev/null
    read -r finished verdict < <(check)
    if [[ $verdict != ok ]]; then
      why="exit $RC"
      ((RC > 128)) && why="signal $((RC - 128))"
      ((STALLED)) && why="no output for ${STALL}s"
      keep_finding "$verdict" "$first" "$why"
      pending=""
    fi
    tail -n +2 "$rest" >"$rest.next"
    list=$rest.next
  done
  # A run failed, and no file failed alone after it: the failure needs the company of
  # other files (or is flaky). Keep the whole run's list and stderr.
  if [[ -n $pending ]]; then
    IFS=$'\t' read -r verdict RUN_DIR why <<<"$pending"
    printf 'unreproduced-%s\t%s\t%s\t%s\n' "$verdict" "$RUN_DIR/files.txt" "$RUN_DIR" "$why" >>"$FINDINGS_TSV"
    mkdir -p "$FINDINGS/$(basename "$RUN_DIR")"
    cp "$RUN_DIR/files.txt" "$RUN_DIR/err.txt" "$FINDINGS/$(basename "$RUN_DIR")/"
    echo "pipeline.sh: FINDING unreproduced $verdict in $RUN_DIR ($why)" >&2
  fi
}

batches=("$WORK"/runs/batch-*)
echo "pipeline.sh: $N files (seed $SEED) in ${#batches[@]} batches of up to $BATCH; binary $BIN" >&2
for i in "${!batches[@]}"; do
  process "${batches[$i]}"
  printf 'pipeline.sh: batch %d/%d done, %d files, %ds\n' "$((i + 1))" "${#batches[@]}" \
    "$(wc -l <"$RESULTS")" "$((SECONDS - START))" >&2
done

WALL=$((SECONDS - START))
python3 - "$RESULTS" "$FINDINGS_TSV" "$WORK" "$N" "$SEED" "$WALL" "$PEAK_KB" "$FINDINGS" <<'PY'
import collections, json, os, shutil, sys
results_path, findings_path, work, n, seed, wall, peak_kb, findings_dir = sys.argv[1:]
records = [json.loads(l) for l in open(results_path)]
findings = [l.rstrip("\n").split("\t", 3) for l in open(findings_path) if l.strip()]
status = collections.Counter(r["status"] for r in records)
codes = collections.Counter(r.get("code") for r in records if r["status"] == "error")
kinds = collections.Counter(f[0] for f in findings)
seen = {r["file"] for r in records}
print(f"\nvoxq pipeline fuzz: seed {seed}, {n} files, scratch {work}")
print(f"  files accounted for   {len(seen)} of {n}")
print(f"  transcribed (ok)      {status['ok']}")
print(f"  per-file errors       {status['error']}")
for code, count in codes.most_common():
    print(f"    {code or '(none)':<24}{count}")
print(f"  crashes               {status['crash']}")
print(f"  hangs                 {status['hang']}")
print(f"  caught panics         {kinds['caught-panic']}")
print(f"  stderr panics         {kinds['stderr-panic']}")
print(f"  contract violations   {kinds['contract'] + status['bad-line']}")
print(f"  unreproduced failures {sum(v for k, v in kinds.items() if k.startswith('unreproduced'))}")
print(f"  peak RSS per process  {int(peak_kb) / 1024:.0f} MiB")
print(f"  wall time             {int(wall) // 60}m{int(wall) % 60:02d}s")
for kind, file, run_dir, detail in findings:
    print(f"  FINDING {kind}: {file} ({detail}); run {run_dir}")
    # Crash and hang culprits are already there; keep the other findings' inputs too.
    if os.path.isfile(file) and file.startswith(work):
        shutil.copy(file, findings_dir)
if findings:
    shutil.copy(findings_path, findings_dir)
    print(f"  inputs of the findings, and findings.tsv: {findings_dir}")
bad = len(seen) != int(n) or findings or status["crash"] or status["hang"]
sys.exit(1 if bad else 0)
PY
