#!/usr/bin/env bash
# Fetch Intel's prebuilt oneDNN 3.1 (GNU OpenMP build) and its headers from PyPI into DIR.
#   scripts/fetch-onednn.sh [DIR]     (default: $VOXQ_ONEDNN_DIR, else ~/.cache/voxq-onednn-3.1.0)
#
# Why: faster-whisper's CTranslate2 wheel runs its int8/float GEMMs on oneDNN 3.1; newer
# oneDNN releases use different kernels whose rounding flips close beam-search decisions,
# so transcripts drift from the reference. Linking the same oneDNN keeps parity, and a
# prebuilt library also saves the ~25 min it takes to build oneDNN from source.
set -euo pipefail
version=2023.1.0   # oneAPI release carrying oneDNN 3.1.0
dir=${1:-${VOXQ_ONEDNN_DIR:-$HOME/.cache/voxq-onednn-3.1.0}}
if [ -f "$dir/lib/libdnnl.so.3" ] && [ -f "$dir/include/oneapi/dnnl/dnnl.h" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" \
  "onednn-cpu-gomp==$version" "onednn-devel-cpu-gomp==$version"
mkdir -p "$dir"
for whl in "$tmp"/*.whl; do
  python3 - "$whl" "$dir" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        # Wheel data lives under <name>.data/data/{lib,include,share}/...
        if len(parts) > 3 and parts[0].endswith(".data") and parts[1] == "data" and not info.is_dir():
            target = os.path.join(dest, *parts[2:])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                out.write(src.read())
PY
done
grep -q "DNNL_VERSION_MINOR 1" "$dir/include/oneapi/dnnl/dnnl_version.h"
echo "oneDNN 3.1 unpacked into $dir" >&2
