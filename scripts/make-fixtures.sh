#!/usr/bin/env bash
# Generate the audio test fixtures under fixtures/ (run from anywhere):
#   scripts/make-fixtures.sh
#   scripts/make-fixtures.sh --bulk [DIR [N]]   (benchmark notes outside fixtures/, see below)
#
# Needs espeak-ng, sox, ffmpeg/ffprobe (with libopus, libmp3lame) and python3.
# Rerunning is safe: every output is rewritten from scratch. With the same tool
# versions the output is byte-identical (ffmpeg runs with bitexact flags and no
# metadata, sox runs with -R so its noise/dither generators are seeded). Other
# espeak-ng/ffmpeg/libopus versions produce different bytes, so the committed
# files are the reference; fixtures/VERSIONS.txt records what made them.
#
# Groups:
#   fixtures/voice/  Fourteen synthetic English voice notes (espeak-ng, several
#                    voices and speeds): five short (2-4 s), seven medium
#                    (5-10 s) and two long (25-45 s; one over 30 s to exercise
#                    Whisper's 30 s windowing). Each is encoded into exactly one
#                    container/codec; every format appears at least twice:
#                    Ogg/Opus (.ogg x2, .opus x1), WebM/Opus, M4A/AAC-LC, MP3,
#                    FLAC, and WAV (8 kHz mono s16, 44.1 kHz stereo s16, 48 kHz
#                    mono float32). transcripts.tsv holds the exact spoken text
#                    (file<TAB>text), numbers spelled out, for WER scoring.
#   fixtures/multilingual/  Voice notes in Czech, German, Spanish, French,
#                    Polish, Italian and Russian (espeak-ng's voices for them),
#                    mostly Ogg/Opus like messaging apps, some M4A/MP3/WebM.
#                    The file name starts with the language code (`cs-1.ogg`);
#                    transcripts.tsv holds the spoken text. No digits or number
#                    words. espeak-ng's Russian is poorly recognised by Whisper
#                    base (see docs/research/issue13-engine.md): it is there for
#                    agreement and WER against faster-whisper, not for detection.
#   fixtures/edge/   Valid audio that is hard to transcribe: near-silence, a
#                    0.5 s snippet, heavy clipping, ~5 dB SNR white noise, and
#                    speech at -40 dB. All 16 kHz mono except short-0.5s.ogg.
#   fixtures/bad/    Inputs that must be rejected (or at least not crash):
#                    truncated Ogg/Opus and M4A, random bytes named .mp3, a text
#                    file named .wav, an empty file, and a WAV header whose data
#                    chunk claims bytes that are not there.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/fixtures
for t in espeak-ng sox ffmpeg ffprobe python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- bulk notes
#   scripts/make-fixtures.sh --bulk [DIR [N]]   (default ~/.cache/voxq-bulk-notes, 200)
# N synthetic English voice notes for the throughput benchmark (bench/run.sh), not
# committed and not touching fixtures/. Python's random.seed(13) draws each note: a
# target length uniform in 1-60 s, one voice (en-us, en-gb, en-us+f3) and speed
# (140-175 wpm), then sentences (the fixture sentences without numbers, and short
# phrases; none twice in a note) joined by 0.3-1.5 s pauses of silence until the next one would pass the
# target. Encodings cycle through the ten fixture encodings (same ffmpeg settings).
# No digits or number words. The draws are sequential, so the first N notes of a larger
# set are the N-note set; a DIR already holding >= N notes from the same generator and
# tool versions is reused. Writes DIR/bulk-NNN.EXT and DIR/transcripts.tsv (file<TAB>text),
# prints DIR.
if [ "${1:-}" = --bulk ]; then
  bulk_dir=${2:-$HOME/.cache/voxq-bulk-notes}
  bulk_n=${3:-200}
  mkdir -p "$bulk_dir"
  python3 - "$bulk_dir" "$bulk_n" "$tmp" <<'PY'
import os, random, subprocess, sys, wave

out, n, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
GENERATOR = "bulk-notes v2"
stamp = os.path.join(out, ".stamp")
versions = (subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
            + " | " + subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0])
if os.path.exists(stamp) and os.path.exists(os.path.join(out, "transcripts.tsv")):
    have = open(stamp).read().split("\n")
    if len(have) >= 3 and have[0] == GENERATOR and have[1] == versions and int(have[2]) >= n:
        print(f"bulk notes: reusing {have[2]} notes in {out}", file=sys.stderr)
        sys.exit(0)

SENTENCES = [  # fixtures/voice sentences without numbers
    "Call me back when you get this.",
    "I'm on my way, see you soon.",
    "Hey team, quick update on the website project.",
    "The designer sent over the new home page this morning, and overall it looks great, but the menu still needs some work on small screens.",
    "Could everyone please review the open tasks before Friday and let me know if anything is blocked?",
    "I will set up a short call on Monday morning to go through the remaining issues together.",
    "Thanks, and have a good weekend.",
    "Thanks so much, that sounds perfect.",
    "The parking garage is full, so I am going to park on the street behind the library.",
    "I'm the plumber you called on Tuesday about the leaking kitchen sink.",
    "Please send me a text or give me a call back to confirm, otherwise I will try again later this week.",
    "Also, if you could clear out the cupboard under the sink before I arrive, that would save us both some time.",
    "Thank you, and have a nice evening.",
    "Yes, that works for me.",
    "I left the spare keys under the blue flower pot next to the back door, so just let yourself in.",
    "Almost there, just parking the car.",
]
PHRASES = [
    "Okay, thanks.", "Sure, no problem.", "Sounds good to me.", "See you later.",
    "Talk to you soon.", "Got it, thank you.", "Let me know.", "I will call you back.",
    "Yes, please.", "No worries at all.", "Good morning.", "Have a great day.",
]
POOL = SENTENCES + PHRASES
VOICES = ["en-us", "en-gb", "en-us+f3"]
SPEEDS = list(range(140, 176, 5))
RATE = 22050  # espeak-ng's output rate
FFX = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]
OPUS = ["-c:a", "libopus", "-ar", "48000", "-ac", "1"]
TARGETS = [  # name, extension, ffmpeg output options (as for fixtures/voice)
    ("ogg", "ogg", OPUS[:2] + ["-b:a", "24k"] + OPUS[2:] + ["-f", "ogg"]),
    ("opus", "opus", OPUS[:2] + ["-b:a", "24k"] + OPUS[2:] + ["-f", "ogg"]),
    ("webm", "webm", OPUS[:2] + ["-b:a", "32k"] + OPUS[2:] + ["-f", "webm"]),
    ("m4a", "m4a", ["-c:a", "aac", "-profile:a", "aac_low", "-b:a", "48k", "-ar", "44100", "-ac", "1", "-f", "ipod"]),
    ("m4a-faststart", "m4a", ["-c:a", "aac", "-profile:a", "aac_low", "-b:a", "48k", "-ar", "44100", "-ac", "1",
                              "-movflags", "+faststart", "-f", "ipod"]),
    ("mp3", "mp3", ["-c:a", "libmp3lame", "-b:a", "48k", "-ar", "44100", "-ac", "1", "-f", "mp3"]),
    ("flac", "flac", ["-c:a", "flac", "-ar", "16000", "-ac", "1", "-sample_fmt", "s16", "-f", "flac"]),
    ("wav8k", "wav", ["-c:a", "pcm_s16le", "-ar", "8000", "-ac", "1", "-f", "wav"]),
    ("wav44s", "wav", ["-c:a", "pcm_s16le", "-ar", "44100", "-ac", "2", "-f", "wav"]),
    ("wav48f", "wav", ["-c:a", "pcm_f32le", "-ar", "48000", "-ac", "1", "-f", "wav"]),
]

speech = {}  # (sentence, voice, speed) -> s16le mono frames at RATE


def synth(text, voice, speed):
    key = (text, voice, speed)
    if key not in speech:
        path = os.path.join(tmp, "bulk-sentence.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, "--", text], check=True)
        with wave.open(path) as w:
            assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
            speech[key] = w.readframes(w.getnframes())
    return speech[key]


def seconds(frames):
    return len(frames) / 2 / RATE


for f in os.listdir(out):
    if f.startswith("bulk-") or f in ("transcripts.tsv", ".stamp"):
        os.remove(os.path.join(out, f))
random.seed(13)
rows, total = [], 0.0
for i in range(n):
    target = random.uniform(1.0, 60.0)
    voice, speed = random.choice(VOICES), random.choice(SPEEDS)
    pcm, texts, length = b"", [], 0.0
    while True:
        pause = random.uniform(0.3, 1.5) if texts else 0.0
        fits = [s for s in POOL
                if s not in texts and length + pause + seconds(synth(s, voice, speed)) <= target]
        if not fits:
            if texts:
                break
            # A target shorter than every sentence: the shortest phrase alone.
            fits = [min(PHRASES, key=lambda s: seconds(synth(s, voice, speed)))]
        s = random.choice(fits)
        pcm += b"\0\0" * round(pause * RATE) + synth(s, voice, speed)
        texts.append(s)
        length = seconds(pcm)
    name, ext, opts = TARGETS[i % len(TARGETS)]
    src = os.path.join(tmp, "bulk-note.wav")
    with wave.open(src, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(pcm)
    file = f"bulk-{i + 1:03d}.{ext}"
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", src]
                   + FFX + opts + [os.path.join(out, file)], check=True)
    rows.append((file, " ".join(texts)))
    total += length
with open(os.path.join(out, "transcripts.tsv"), "w") as f:
    f.write("file\ttext\n")
    for file, text in rows:
        f.write(f"{file}\t{text}\n")
with open(stamp, "w") as f:
    f.write(f"{GENERATOR}\n{versions}\n{n}\n")
print(f"bulk notes: {n} notes, {total:.0f} s of speech and pauses, in {out}", file=sys.stderr)
PY
  echo "$bulk_dir"
  exit 0
fi

rm -rf "$out/voice" "$out/multilingual" "$out/edge" "$out/bad"
mkdir -p "$out/voice" "$out/multilingual" "$out/edge" "$out/bad"

{
  espeak-ng --version
  ffmpeg -version | head -1
  sox --version
  python3 --version
} >"$out/VERSIONS.txt"

# Common ffmpeg flags: quiet, no metadata, no version strings or random ids.
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
FFX=(-map_metadata -1 -fflags +bitexact -flags:a +bitexact)

# ---------------------------------------------------------------- voice notes
# name | voice | speed | target | text
# target: ogg opus webm m4a m4a-faststart mp3 flac wav8k wav44s wav48f
notes=(
  "01-running-late|en-us|160|ogg|Hi Sarah, I'm running about ten minutes late, please start the meeting without me."
  "02-call-me-back|en-us|150|wav44s|Call me back when you get this."
  "03-grocery-list|en-us+f3|165|webm|Can you pick up milk, eggs, two loaves of bread and some bananas on your way home tonight?"
  "04-dentist-reminder|en-gb|155|m4a-faststart|Hello, this is a reminder that your dentist appointment is on Thursday at three thirty in the afternoon."
  "05-on-my-way|en-us+f3|150|wav48f|I'm on my way, see you soon."
  "06-project-update|en-us|160|ogg|Hey team, quick update on the website project. The designer sent over the new home page this morning, and overall it looks great, but the menu still needs some work on small screens. I spoke with the client yesterday afternoon and they want to move the launch date forward by one week, so we now have until the twelfth of next month. Could everyone please review the open tasks before Friday and let me know if anything is blocked? I will set up a short call on Monday morning to go through the remaining issues together. Thanks, and have a good weekend."
  "07-sounds-perfect|en-gb|170|opus|Thanks so much, that sounds perfect."
  "08-flight-delayed|en-us|175|mp3|My flight has been delayed by two hours, so I will land at around nine forty five tonight."
  "09-parking|en-us+f3|155|flac|The parking garage is full, so I am going to park on the street behind the library."
  "10-birthday-party|en-gb|145|wav8k|Do not forget that grandma's birthday party starts at six o'clock on Sunday evening."
  "11-plumber-voicemail|en-us+f3|150|m4a|Hi, this is a message for the owner of the apartment on the second floor. I'm the plumber you called on Tuesday about the leaking kitchen sink. I can come by tomorrow between eight and ten in the morning, if that still works for you. Please send me a text or give me a call back to confirm, otherwise I will try again later this week. Also, if you could clear out the cupboard under the sink before I arrive, that would save us both some time. Thank you, and have a nice evening."
  "12-yes-that-works|en-us|140|flac|Yes, that works for me."
  "13-keys-under-pot|en-gb|160|webm|I left the spare keys under the blue flower pot next to the back door, so just let yourself in."
  "14-almost-there|en-us|165|mp3|Almost there, just parking the car."
)

printf 'file\ttext\n' >"$out/voice/transcripts.tsv"
for entry in "${notes[@]}"; do
  IFS='|' read -r name voice speed target text <<<"$entry"
  src=$tmp/$name.wav
  espeak-ng -v "$voice" -s "$speed" -w "$src" -- "$text"
  case $target in
    ogg | opus)
      file=$name.$target
      ff -i "$src" "${FFX[@]}" -c:a libopus -b:a 24k -ar 48000 -ac 1 -f ogg "$out/voice/$file" ;;
    webm)
      file=$name.webm
      ff -i "$src" "${FFX[@]}" -c:a libopus -b:a 32k -ar 48000 -ac 1 -f webm "$out/voice/$file" ;;
    m4a | m4a-faststart)
      # AAC-LC mono 48 kbit/s; one file has its moov atom first (streaming
      # layout), the other at the end (ffmpeg's default).
      file=$name.m4a
      mov=()
      [ "$target" = m4a-faststart ] && mov=(-movflags +faststart)
      ff -i "$src" "${FFX[@]}" -c:a aac -profile:a aac_low -b:a 48k -ar 44100 -ac 1 \
        "${mov[@]}" -f ipod "$out/voice/$file" ;;
    mp3)
      file=$name.mp3
      ff -i "$src" "${FFX[@]}" -c:a libmp3lame -b:a 48k -ar 44100 -ac 1 -f mp3 "$out/voice/$file" ;;
    flac)
      file=$name.flac
      ff -i "$src" "${FFX[@]}" -c:a flac -ar 16000 -ac 1 -sample_fmt s16 -f flac "$out/voice/$file" ;;
    wav8k)
      file=$name.wav
      ff -i "$src" "${FFX[@]}" -c:a pcm_s16le -ar 8000 -ac 1 -f wav "$out/voice/$file" ;;
    wav44s)
      file=$name.wav
      ff -i "$src" "${FFX[@]}" -c:a pcm_s16le -ar 44100 -ac 2 -f wav "$out/voice/$file" ;;
    wav48f)
      file=$name.wav
      ff -i "$src" "${FFX[@]}" -c:a pcm_f32le -ar 48000 -ac 1 -f wav "$out/voice/$file" ;;
    *) echo "unknown target $target" >&2; exit 1 ;;
  esac
  printf '%s\t%s\n' "$file" "$text" >>"$out/voice/transcripts.tsv"
done

# ---------------------------------------------------------------- multilingual
# name | espeak-ng voice | speed | target | text (the name's prefix is the language)
ml_notes=(
  "cs-1|cs|140|ogg|Ahoj Petro, jsem teď v obchodě a nevím, jestli máme doma mléko a chleba. Napiš mi prosím, co mám ještě koupit."
  "cs-2|cs|130|ogg|Dobrý den, volám kvůli zítřejší schůzce. Můžeme ji prosím přesunout na čtvrtek odpoledne? Děkuji a hezký den."
  "de-1|de|150|ogg|Guten Morgen, hier ist Anna. Ich wollte nur sagen, dass das Paket heute Nachmittag geliefert wird. Kannst du bitte zu Hause sein?"
  "de-2|de|150|m4a|Hallo, ich bin gleich da, bitte wartet noch kurz auf mich."
  "es-1|es|150|ogg|Buenas tardes, te llamo para confirmar la cita con el médico del jueves por la tarde. Si hay algún problema, llámame, por favor."
  "es-2|es|150|mp3|Hola, llego un poco tarde, empezad la reunión sin mí."
  "fr-1|fr-fr|150|ogg|Salut, c'est Marie. Le train a été annulé, alors je prendrai le bus. On se retrouve devant la gare?"
  "pl-1|pl|150|ogg|Dzień dobry, dzwonię w sprawie zamówienia. Paczka przyjdzie jutro rano, więc proszę być w domu do południa. Dziękuję."
  "it-1|it|150|webm|Buongiorno, sono Marco. Volevo ricordarti che domani sera andiamo a cena dai miei genitori. Porta il vino, per favore."
  "it-2|it|150|ogg|Ciao, sono un po' in ritardo, cominciate pure senza di me."
  "ru-1|ru|140|ogg|Привет, мама. Я сегодня немного задержусь на работе, поэтому ужинайте без меня. Позвоню, когда буду выходить."
  "ru-2|ru|150|ogg|Добрый день, это Сергей. Напоминаю, что завтра утром у нас встреча в офисе. Пожалуйста, возьмите с собой документы."
)
printf 'file\ttext\n' >"$out/multilingual/transcripts.tsv"
for entry in "${ml_notes[@]}"; do
  IFS='|' read -r name voice speed target text <<<"$entry"
  src=$tmp/ml-$name.wav
  espeak-ng -v "$voice" -s "$speed" -w "$src" -- "$text"
  case $target in
    ogg)
      file=$name.ogg
      ff -i "$src" "${FFX[@]}" -c:a libopus -b:a 24k -ar 48000 -ac 1 -f ogg "$out/multilingual/$file" ;;
    webm)
      file=$name.webm
      ff -i "$src" "${FFX[@]}" -c:a libopus -b:a 32k -ar 48000 -ac 1 -f webm "$out/multilingual/$file" ;;
    m4a)
      file=$name.m4a
      ff -i "$src" "${FFX[@]}" -c:a aac -profile:a aac_low -b:a 48k -ar 44100 -ac 1 \
        -movflags +faststart -f ipod "$out/multilingual/$file" ;;
    mp3)
      file=$name.mp3
      ff -i "$src" "${FFX[@]}" -c:a libmp3lame -b:a 48k -ar 44100 -ac 1 -f mp3 "$out/multilingual/$file" ;;
    *) echo "unknown target $target" >&2; exit 1 ;;
  esac
  printf '%s\t%s\n' "$file" "$text" >>"$out/multilingual/transcripts.tsv"
done

# ---------------------------------------------------------------- edge cases
# sox: -R = repeatable (seeded noise and dither), -V1 = only report failures
# (silences the expected "clipped N samples" warning).
sx() { sox -V1 -R "$@"; }
base=$tmp/edge-base.wav   # 09-parking at 16 kHz mono s16
sx "$tmp/09-parking.wav" -r 16000 -c 1 -b 16 "$base"

# ~ -66 dBFS white noise: digitally "silent" but not all zeros.
sx -n -r 16000 -c 1 -b 16 "$out/edge/silence-3s.wav" synth 3 whitenoise vol 0.0005

# 0.5 s from inside the first words of 01-running-late, Ogg/Opus like Telegram.
ff -ss 0.3 -t 0.5 -i "$tmp/01-running-late.wav" "${FFX[@]}" \
  -c:a libopus -b:a 24k -ar 48000 -ac 1 -f ogg "$out/edge/short-0.5s.ogg"

# +20 dB: heavy hard clipping.
sx "$base" "$out/edge/clipped.wav" vol 20 dB

# -40 dB: audible only after heavy gain.
sx "$base" "$out/edge/quiet.wav" vol -40 dB

# White noise at ~5 dB SNR (RMS over the whole note, pauses included).
# -G scales the mix down if needed so it does not clip; that keeps the SNR.
dur=$(soxi -D "$base")
sx -n -r 16000 -c 1 -b 16 "$tmp/noise.wav" synth "$dur" whitenoise vol 0.5
rms() { sox "$1" -n stat 2>&1 | awk '/^RMS +amplitude/ {print $3}'; }
gain=$(python3 -c 'import sys; s, n = map(float, sys.argv[1:]); print(f"{s / n / 10 ** (5 / 20):.6f}")' \
  "$(rms "$base")" "$(rms "$tmp/noise.wav")")
sox -V1 -R -G -m -v 1 "$base" -v "$gain" "$tmp/noise.wav" "$out/edge/noisy.wav"

# ---------------------------------------------------------------- bad inputs
trunc() { # trunc SRC DST NUM DEN: first NUM/DEN of SRC's bytes
  local size
  size=$(wc -c <"$1")
  head -c $((size * $3 / $4)) "$1" >"$2"
}
trunc "$out/voice/06-project-update.ogg" "$out/bad/truncated.ogg" 40 100
# The faststart one: the moov atom survives, so it opens, but the sample table
# points past the end of the file.
trunc "$out/voice/04-dentist-reminder.m4a" "$out/bad/truncated.m4a" 1 2

python3 - "$out/bad" <<'PY'
import random, struct, sys
d = sys.argv[1]
# 4 KiB of reproducible noise (Mersenne Twister, fixed seed).
random.seed(7)
with open(f"{d}/random.mp3", "wb") as f:
    f.write(bytes(random.getrandbits(8) for _ in range(4096)))
with open(f"{d}/text.wav", "w") as f:
    f.write("This is not a WAV file.\nIt is plain text with a .wav name.\n")
open(f"{d}/empty.wav", "wb").close()
# Canonical 44-byte PCM header: 16 kHz mono s16, data chunk claims 1 s
# (32000 bytes) but the file ends right after the header.
rate, ch, bits, data = 16000, 1, 16, 32000
hdr = (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
       + b"fmt " + struct.pack("<IHHIIHH", 16, 1, ch, rate, rate * ch * bits // 8, ch * bits // 8, bits)
       + b"data" + struct.pack("<I", data))
assert len(hdr) == 44
with open(f"{d}/header-only.wav", "wb") as f:
    f.write(hdr)
PY

# ---------------------------------------------------------------- check
# Every voice/edge file must decode without errors; print a summary table.
fail=0
longest=0
printf '%-31s %-32s %8s %9s\n' file format duration bytes
for f in "$out"/voice/*.* "$out"/multilingual/*.* "$out"/edge/*.*; do
  case $f in *.tsv) continue ;; esac
  if ! errs=$(ffmpeg -nostdin -v error -i "$f" -f null - 2>&1) || [ -n "$errs" ]; then
    echo "DECODE ERROR $f: $errs" >&2
    fail=1
  fi
  info=$(ffprobe -v error -show_entries format=format_name,duration:stream=codec_name,sample_rate,channels,sample_fmt \
    -of default=nw=1 "$f")
  get() { sed -n "s/^$1=//p" <<<"$info" | head -1; }
  d=$(get duration)
  fmt="$(get format_name | cut -d, -f1)/$(get codec_name) $(get sample_rate)Hz $(get channels)ch $(get sample_fmt)"
  printf '%-31s %-32s %7.2fs %9d\n' "${f#"$out"/}" "$fmt" "$d" "$(wc -c <"$f")"
  case $f in */voice/*) longest=$(python3 -c "print(max($longest, $d))") ;; esac
done
bash "$root/scripts/make-silence-padded.sh" "$out/edge/silence-padded.ogg"
printf 'voice total: %s bytes\n' "$(cat "$out"/voice/* | wc -c)"
python3 -c "import sys; sys.exit(0 if $longest > 30 else 1)" ||
  { echo "no voice note is longer than 30 s" >&2; fail=1; }
exit $fail
