#!/usr/bin/env bash
# Real human speech for the parity benchmark, from a package registry (the only network
# this project's machines reach): the PyPI source release of pocketsphinx 5.1.1
# (BSD-2-Clause) ships CMU test recordings with their transcripts, among them five
# LibriVox clips (public domain). Writes DIR/*.wav (16 kHz mono) and DIR/transcripts.tsv
# in the fixture format (file<TAB>text), only for clips whose text the package documents.
#
#   bench/human-speech.sh [DIR]     (default ~/.cache/voxq-human-speech)
set -euo pipefail
dir=${1:-$HOME/.cache/voxq-human-speech}
[ -f "$dir/transcripts.tsv" ] && { echo "$dir"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: pocketsphinx==5.1.1 -d "$tmp" >&2
tar xzf "$tmp"/pocketsphinx-5.1.1.tar.gz -C "$tmp"
src=$tmp/pocketsphinx-5.1.1/test/data
mkdir -p "$dir"
{
  printf 'file\ttext\n'
  # "<s> words </s> (id)" lines: LibriVox chapter clips and the playing-cards set.
  for pair in "librivox/transcription:librivox" "cards/cards.transcription:cards"; do
    file=${pair%%:*}; sub=${pair##*:}
    sed -E 's#^<s> (.*) </s> \((.*)\)$#\2\t\1#; s# +\t#\t#; s#\t +#\t#' "$src/$file" |
      while IFS=$'\t' read -r id text; do
        name="$sub-$id.wav"
        cp "$src/$sub/$id.wav" "$dir/$name"
        printf '%s\t%s\n' "$name" "$(echo "$text" | sed -E 's/ +$//')"
      done
  done
  # Texts asserted by the package's own tests (cython/test/*.py).
  sox -t raw -r 16000 -e signed -b 16 -c 1 "$src/goforward.raw" "$dir/goforward.wav"
  printf 'goforward.wav\tgo forward ten meters\n'
  cp "$src/forever/input_2_16k.wav" "$dir/forever.wav"
  printf 'forever.wav\tfeels like these days go on forever\n'
} > "$dir/transcripts.tsv.part"
mv "$dir/transcripts.tsv.part" "$dir/transcripts.tsv"
echo "$dir"
