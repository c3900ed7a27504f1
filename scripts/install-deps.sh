#!/usr/bin/env bash
# Installs the Debian packages voxq needs to build and test, if any are missing:
# cmake and a C/C++ compiler (CTranslate2, oneDNN, libopus), pkg-config, and the
# fixture tools espeak-ng, sox and ffmpeg, and promtool (package prometheus). Runs `apt-get update` once first. Also the
# PyPI packages standardwebhooks and openai (clients the tests use).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cmake || need+=(cmake)
have g++ || need+=(g++)
have cc || need+=(gcc)
have make || need+=(make)
have pkg-config || need+=(pkg-config)
have ffmpeg || need+=(ffmpeg)
have ffprobe || need+=(ffmpeg)
have sox || need+=(sox)
have bc || need+=(bc)
have espeak-ng || need+=(espeak-ng)
have python3 || need+=(python3 python3-pip)
# promtool checks the metrics expositions in the tests.
have promtool || need+=(prometheus)
# A real browser drives the admin dashboard (tests/scripts/admin_browser.py).
have chromium || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Clients we did not write, that the tests drive voxq with: the reference Standard
# Webhooks verifier (examples/webhook_receiver.py), OpenAI's official client, and
# schemathesis (the OpenAPI contract test, tests/tests/contract.rs).
for module in standardwebhooks openai schemathesis; do
  python3 -c "import $module" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check "$module"
done
# OpenTelemetry's protobuf definitions check the OTLP export (tests/tests/tracing.rs).
python3 -c "import opentelemetry.proto.collector.trace.v1.trace_service_pb2" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check opentelemetry-proto
# Playwright drives that Chromium; it must not download a browser of its own.
python3 -c "import playwright.sync_api" 2>/dev/null ||
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 python3 -m pip install --quiet --disable-pip-version-check playwright
have cargo || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
