#!/usr/bin/env bash
# Makes fixtures/edge/silence-padded.ogg: 8 s of near-silent white noise, the voice note
# fixtures/voice/02-call-me-back.wav ("Call me back when you get this."), then 12 s of
# the same kind of noise; 16 kHz mono mixed, encoded as Ogg/Opus 24 kbit/s like the voice
# notes. The VAD tests and bench/vad.sh use it: with vad_filter the words must stay and
# keep their place in the original timeline (first word at about 8 s), and the 20 s of
# noise must not turn into text.
#
#   scripts/make-silence-padded.sh [OUT]     (default fixtures/edge/silence-padded.ogg)
#
# The noise is at the level of fixtures/edge/silence-3s.wav: uniform white noise of
# amplitude 0.0005 (peaks at -66 dBFS before encoding; the decoded Ogg measures about
# -74 dBFS RMS, silence-3s.wav -76), from ffmpeg's anoisesrc with fixed
# seeds (1 for the lead-in, 2 for the tail), so every run gives the same bytes with the
# same ffmpeg/libopus (bitexact flags, no metadata; see fixtures/VERSIONS.txt).
# scripts/make-fixtures.sh calls it after rebuilding fixtures/edge.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-fixtures/edge/silence-padded.ogg}
src=fixtures/voice/02-call-me-back.wav
[ -f "$src" ] || { echo "make-silence-padded: $src not found" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "make-silence-padded: ffmpeg is required" >&2; exit 1; }

lead_s=8 tail_s=12 amplitude=0.0005
tmp=$(mktemp "${out%/*}/.silence-padded.XXXXXX.ogg")
trap 'rm -f "$tmp"' EXIT
ffmpeg -v error -y -i "$src" \
  -filter_complex "anoisesrc=r=16000:a=$amplitude:d=$lead_s:c=white:seed=1[lead];
    [0:a]aresample=16000,aformat=sample_fmts=flt:sample_rates=16000:channel_layouts=mono[voice];
    anoisesrc=r=16000:a=$amplitude:d=$tail_s:c=white:seed=2[tail];
    [lead]aformat=sample_fmts=flt:channel_layouts=mono[l];
    [tail]aformat=sample_fmts=flt:channel_layouts=mono[t];
    [l][voice][t]concat=n=3:v=0:a=1[out]" \
  -map "[out]" -map_metadata -1 -fflags +bitexact -flags:a +bitexact \
  -c:a libopus -b:a 24k -ar 48000 -ac 1 -f ogg "$tmp"
mv "$tmp" "$out"
trap - EXIT
printf '%s: %.3f s, %s bytes, sha256 %s\n' "$out" \
  "$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$out")" \
  "$(stat -c %s "$out")" "$(sha256sum "$out" | cut -d' ' -f1)"
