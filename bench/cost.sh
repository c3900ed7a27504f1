#!/usr/bin/env bash
# Summary cost benchmark (issue 4): replays a deterministic mixed workload (60 % short,
# 30 % medium, 10 % long transcripts, 500 jobs, a quarter of them repeats) through the
# summary tier policy and through an always-strong-model policy, against an in-process
# OpenAI-compatible stub with a price table (gpt-4o-mini $0.15/$0.60, gpt-4o $2.50/$10 per
# million tokens in/out). Prints calls per model, tokens, cost per policy, the cost ratio
# tier / always-strong (goal <= 0.5) and the chat cache hit rate.
#
#   bench/cost.sh            (or: make bench-cost)
#
# Runs as a cargo example (worker/examples/summary_cost.rs) with the dev profile: `cargo
# bench` would use the bench profile and build CTranslate2 a second time. No services,
# keys or network needed. Exits non-zero if the stub saw a malformed request, a chat call
# failed, or the stage's costs disagree with the stub's token count.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voxq-target}"
exec cargo run --quiet -p voxq-worker --example summary_cost
