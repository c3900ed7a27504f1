#!/usr/bin/env python3
"""Mutates the committed audio fixtures into inputs for fuzz/pipeline.sh.

Deterministic for a given seed and count. Each output file is one fixture (or a splice of
two) with one to three mutations: bit flips, byte overwrites, truncation, inserted,
duplicated, deleted or swapped chunks, and header fields of WAV, FLAC, Ogg (Opus and
Vorbis), MP4, Matroska/WebM and MP3 set to extreme values (sizes, rates, channel counts,
declared durations). Ogg pages usually get their CRC recomputed so the mutation reaches
the demuxer rather than being dropped as a bad page. Most files keep their fixture's
extension; some get another audio extension, a non-audio one, or none.

Writes the files to OUT/inputs/ and one line per file to OUT/manifest.tsv
(name, source fixtures, mutations). Standard library only.
"""

import argparse
import random
import struct
import sys
from pathlib import Path

# Most files stay under this size so that a 10,000-file campaign fits on two cores.
SOFT_CAP = 300 * 1024
HARD_CAP = 1024 * 1024

AUDIO_EXTS = ["ogg", "opus", "webm", "m4a", "mp4", "mp3", "flac", "wav", "aac", "mka", "caf"]
ODD_EXTS = ["txt", "bin", "", "WAV", "Mp3", "tar.gz"]

U32_EXTREMES = [0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                0xFFFFFFFF]
U16_EXTREMES = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF]
U64_EXTREMES = [0, 1, 0xFFFFFFFF, 1 << 32, 1 << 40, 1 << 62, (1 << 63) - 1, 1 << 63,
                (1 << 64) - 2, (1 << 64) - 1]
RATES = [0, 1, 2, 8, 100, 4000, 8000, 11025, 96000, 192000, 384000, 1000000, 0x7FFFFFFF,
         0xFFFFFFFF]


class Field:
    """A header field: `width` bytes at `off`, big- or little-endian, and values to try.

    `values` holds ints (packed to `width`) or bytes (written as is). `mask`/`shift` make it
    a bit field inside the integer. `tag` marks fields that declare a duration or length.
    """

    __slots__ = ("off", "width", "big", "values", "name", "mask", "shift", "tag")

    def __init__(self, off, width, big, values, name, mask=None, shift=0, tag=""):
        self.off, self.width, self.big, self.values = off, width, big, values
        self.name, self.mask, self.shift, self.tag = name, mask, shift, tag

    def apply(self, buf, rng):
        if self.off + self.width > len(buf):
            return None
        value = rng.choice(self.values)
        if isinstance(value, (bytes, bytearray)):
            buf[self.off:self.off + self.width] = value[: self.width].ljust(self.width, b"\0")
            return f"{self.name}@{self.off}={value[:8].hex()}"
        order = "big" if self.big else "little"
        limit = (1 << (8 * self.width)) - 1
        if self.mask is None:
            new = value & limit
        else:
            old = int.from_bytes(buf[self.off:self.off + self.width], order)
            new = (old & ~self.mask & limit) | ((value << self.shift) & self.mask)
        buf[self.off:self.off + self.width] = new.to_bytes(self.width, order)
        return f"{self.name}@{self.off}={value:#x}"


def u32(buf, off, big=False):
    return struct.unpack_from(">I" if big else "<I", buf, off)[0]


# ---------------------------------------------------------------- WAV (RIFF)

def wav_fields(b):
    if len(b) < 12 or b[:4] not in (b"RIFF", b"RIFX", b"RF64") or b[8:12] != b"WAVE":
        return []
    fields = [Field(4, 4, False, U32_EXTREMES + [len(b) * 4], "riff-size", tag="len")]
    pos = 12
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], u32(b, pos + 4)
        fields.append(Field(pos + 4, 4, False, U32_EXTREMES + [size + 1, max(size - 1, 0)],
                            f"{cid.decode('latin-1').strip()}-size", tag="len" if cid == b"data" else ""))
        fields.append(Field(pos, 4, False, [b"data", b"fmt ", b"LIST", b"JUNK", b"\0\0\0\0"],
                            "chunk-id"))
        body = pos + 8
        if cid == b"fmt ":
            fields += [
                Field(body, 2, False, [0, 1, 2, 3, 6, 7, 0x11, 0x55, 0xFFFE, 0xFFFF], "format"),
                Field(body + 2, 2, False, [0, 1, 2, 3, 8, 64, 255, 0xFFFF], "channels"),
                Field(body + 4, 4, False, RATES, "sample-rate", tag="dur"),
                Field(body + 8, 4, False, [0, 1] + U32_EXTREMES[-4:], "byte-rate", tag="dur"),
                Field(body + 12, 2, False, [0, 1, 3, 5, 0x7FFF, 0xFFFF], "block-align"),
                Field(body + 14, 2, False, [0, 1, 4, 7, 12, 20, 24, 32, 33, 64, 0xFFFF],
                      "bits"),
            ]
        if size > len(b) or size > 0x7FFFFFFF:
            break
        pos = body + size + (size & 1)
    return fields


# ---------------------------------------------------------------- FLAC

def flac_fields(b):
    if b[:4] != b"fLaC":
        return []
    fields = []
    pos = 4
    while pos + 4 <= len(b):
        head = b[pos]
        length = int.from_bytes(b[pos + 1:pos + 4], "big")
        fields.append(Field(pos, 1, True, [0x00, 0x7F, 0x80, 0x81, 0x84, 0x06, 0xFF], "block-type"))
        fields.append(Field(pos + 1, 3, True, [0, 1, 33, 34, 35, length + 1, 0xFFFFFF],
                            "block-len", tag="len"))
        body = pos + 4
        if head & 0x7F == 0 and length >= 34:
            fields += [
                Field(body, 2, True, [0, 1, 15, 16, 4096, 0xFFFF], "min-block"),
                Field(body + 2, 2, True, [0, 1, 15, 16, 4096, 0xFFFF], "max-block"),
                Field(body + 4, 3, True, [0, 1, 0xFFFFFF], "min-frame"),
                Field(body + 7, 3, True, [0, 1, 0xFFFFFF], "max-frame"),
                # Sample rate (20 bits), channels-1 (3), bits-1 (5), total samples (36).
                Field(body + 10, 8, True, [0, 1, 8, 655350, 0xFFFFF], "rate",
                      mask=0xFFFFF << 44, shift=44, tag="dur"),
                Field(body + 10, 8, True, list(range(8)), "channels-1", mask=0x7 << 41, shift=41),
                Field(body + 10, 8, True, [0, 2, 3, 7, 15, 23, 31], "bits-1",
                      mask=0x1F << 36, shift=36),
                Field(body + 10, 8, True, [0, 1, 1 << 32, (1 << 36) - 1], "total-samples",
                      mask=(1 << 36) - 1, shift=0, tag="dur"),
            ]
        if head & 0x80:
            # Frames follow: their sync codes and headers.
            frame = body + length
            fields.append(Field(frame, 2, True, [0xFFF8, 0xFFF9, 0xFFFF, 0], "frame-sync"))
            fields.append(Field(frame + 2, 1, True, [0x00, 0x0F, 0xF0, 0xFF, 0x1C], "frame-bs-rate"))
            fields.append(Field(frame + 3, 1, True, [0x00, 0x0F, 0xF0, 0xFF, 0xBE], "frame-ch-bits"))
            break
        pos = body + length
    return fields


# ---------------------------------------------------------------- Ogg

def _crc_table():
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


OGG_CRC_TABLE = _crc_table()


def ogg_crc(page):
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ OGG_CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def ogg_pages(b):
    """(offset, header length, total length) of each well-formed page in order."""
    pages = []
    pos = b.find(b"OggS")
    while 0 <= pos and pos + 27 <= len(b):
        nseg = b[pos + 26]
        if pos + 27 + nseg > len(b):
            break
        hlen = 27 + nseg
        total = hlen + sum(b[pos + 27:pos + 27 + nseg])
        pages.append((pos, hlen, total))
        nxt = pos + total
        pos = nxt if b[nxt:nxt + 4] == b"OggS" else b.find(b"OggS", pos + 4)
    return pages


def ogg_fields(b):
    pages = ogg_pages(b)
    if not pages:
        return []
    fields = []
    # The first pages (headers), the last (the final granule gives the duration) and a few
    # from the middle, chosen by the file's length so the list is the same on every call.
    picks = pages[:3] + pages[-2:] + random.Random(len(b)).sample(pages, min(3, len(pages)))
    for pos, hlen, _ in picks:
        fields += [
            Field(pos + 4, 1, False, [1, 0xFF], "version"),
            Field(pos + 5, 1, False, [0, 1, 2, 4, 6, 7, 0xFF], "header-type"),
            Field(pos + 6, 8, False, U64_EXTREMES, "granule", tag="dur"),
            Field(pos + 14, 4, False, [0, 1, 0xFFFFFFFF], "serial"),
            Field(pos + 18, 4, False, [0, 2, 0xFFFFFFFF], "sequence"),
            Field(pos + 26, 1, False, [0, 1, 0xFF], "segments", tag="len"),
        ]
        if hlen > 27:
            fields.append(Field(pos + 27, 1, False, [0, 1, 0xFF], "lacing", tag="len"))
        body = pos + hlen
        if b[body:body + 8] == b"OpusHead":
            fields += [
                Field(body + 8, 1, False, [0, 2, 0xFF], "opus-version"),
                Field(body + 9, 1, False, [0, 1, 2, 3, 8, 9, 255], "opus-channels"),
                Field(body + 10, 2, False, [0, 0x7FFF, 0xFFFF], "opus-preskip"),
                Field(body + 12, 4, False, RATES, "opus-input-rate"),
                Field(body + 16, 2, False, [0x7FFF, 0x8000, 0xFFFF], "opus-gain"),
                Field(body + 18, 1, False, [0, 1, 2, 255], "opus-mapping"),
            ]
        elif b[body:body + 7] == b"\x01vorbis":
            fields += [
                Field(body + 11, 1, False, [0, 1, 2, 8, 255], "vorbis-channels"),
                Field(body + 12, 4, False, RATES, "vorbis-rate", tag="dur"),
                Field(body + 28, 1, False, [0x00, 0x66, 0xB8, 0xFF, 0x11, 0xDD], "vorbis-blocksize"),
            ]
    return fields


def ogg_fix_crcs(buf):
    for pos, _, total in ogg_pages(buf):
        if pos + total > len(buf):
            continue
        page = bytearray(buf[pos:pos + total])
        page[22:26] = b"\0\0\0\0"
        buf[pos + 22:pos + 26] = ogg_crc(page).to_bytes(4, "little")


# ---------------------------------------------------------------- MP4 / ISO BMFF

MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex"}


def box_name(kind):
    return kind.decode("latin-1") if kind.isalnum() else kind.hex()


def mp4_fields(b, start=0, end=None, depth=0):
    end = len(b) if end is None else end
    if depth == 0 and b[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return []
    fields = []
    pos = start
    while pos + 8 <= end:
        size, kind = u32(b, pos, True), b[pos + 4:pos + 8]
        fields.append(Field(pos, 4, True, [0, 1, 7, 8, 9, 0x7FFFFFFF, 0xFFFFFFFF, size + 1,
                                           max(size - 1, 0), size * 2], f"{box_name(kind)}-size",
                            tag="len"))
        if size < 8 or pos + size > end:
            break
        body = pos + 8
        if kind in MP4_CONTAINERS:
            fields += mp4_fields(b, body, pos + size, depth + 1)
        elif kind in (b"mvhd", b"mdhd"):
            if b[body] == 1:
                fields += [Field(body + 20, 4, True, [0, 1, 0xFFFFFFFF], f"{kind.decode()}-timescale", tag="dur"),
                           Field(body + 24, 8, True, U64_EXTREMES, f"{kind.decode()}-duration", tag="dur")]
            else:
                fields += [Field(body + 12, 4, True, [0, 1, 0xFFFFFFFF], f"{kind.decode()}-timescale", tag="dur"),
                           Field(body + 16, 4, True, U32_EXTREMES, f"{kind.decode()}-duration", tag="dur")]
            fields.append(Field(body, 1, True, [0, 1, 2, 0xFF], f"{kind.decode()}-version"))
        elif kind == b"stsd":
            fields.append(Field(body + 4, 4, True, [0, 2, 0xFFFFFFFF], "stsd-count", tag="len"))
            entry = body + 8
            fields += [
                Field(entry, 4, True, [0, 8, 36, 0xFFFFFFFF], "entry-size", tag="len"),
                Field(entry + 4, 4, True, [b"mp4a", b"alac", b"Opus", b"fLaC", b"ac-3", b"\0\0\0\0"], "entry-type"),
                Field(entry + 16, 2, True, [0, 1, 2, 0xFFFF], "entry-version"),
                Field(entry + 24, 2, True, [0, 1, 2, 8, 255, 0xFFFF], "entry-channels"),
                Field(entry + 26, 2, True, [0, 1, 8, 16, 0xFFFF], "entry-bits"),
                Field(entry + 32, 4, True, [0, 1 << 16, 0xFFFFFFFF, 8000 << 16], "entry-rate", tag="dur"),
            ]
            esds = b.find(b"esds", entry, pos + size)
            if esds > 0:
                # Fuzz the AudioSpecificConfig: object type, frequency index, channel config.
                asc = b.find(b"\x05", esds + 8, pos + size)
                if asc > 0:
                    fields.append(Field(asc + 2, 2, True, [0x0000, 0xFFFF, 0x1210, 0x1788, 0xF800,
                                                           0x2B10, 0x1390], "asc"))
        elif kind in (b"stts", b"stsc", b"stsz", b"stco", b"co64", b"ctts", b"stss", b"elst"):
            fields.append(Field(body + 4, 4, True, [0, 1, 0x7FFFFFFF, 0xFFFFFFFF],
                                f"{kind.decode()}-count", tag="len"))
            # A few entries of the table.
            width = 8 if kind == b"co64" else 4
            for k in range(3):
                off = body + 8 + k * width
                if off + width <= pos + size:
                    fields.append(Field(off, width, True,
                                        U64_EXTREMES if width == 8 else U32_EXTREMES + [len(b)],
                                        f"{kind.decode()}-entry", tag="dur" if kind == b"stts" else ""))
        pos += size
    return fields


# ---------------------------------------------------------------- Matroska / WebM

EBML_MASTERS = {0x1A45DFA3, 0x18538067, 0x114D9B74, 0x4DBB, 0x1549A966, 0x1654AE6B, 0xAE, 0xE1,
                0x1F43B675, 0xA0, 0x1C53BB6B, 0xBB, 0xB7, 0x1254C367, 0x7373}
EBML_FLOATS = {0x4489: "duration", 0xB5: "sampling-freq", 0x78B5: "out-sampling-freq"}
EBML_UINTS = {0x2AD7B1: "timecode-scale", 0x9F: "channels", 0x6264: "bit-depth", 0xD7: "track-number",
              0x83: "track-type", 0xE7: "cluster-timecode", 0x56AA: "codec-delay",
              0x56BB: "seek-preroll", 0x42F2: "max-id-len", 0x42F3: "max-size-len",
              0x4287: "doctype-version", 0x53AC: "seek-position", 0xB3: "cue-time",
              0xF1: "cue-cluster-pos", 0x23E383: "default-duration"}
FLOAT_EXTREMES = [struct.pack(">d", v) for v in (0.0, -1.0, 1.0, 1e-300, 1e30, 1e300,
                                                 float("inf"), float("nan"), -48000.0)]


def vint(b, pos, keep_marker):
    if pos >= len(b) or b[pos] == 0:
        return None
    length = 8 - b[pos].bit_length() + 1
    if pos + length > len(b):
        return None
    value = int.from_bytes(b[pos:pos + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, length


def mkv_fields(b, start=0, end=None, depth=0, budget=None):
    end = len(b) if end is None else end
    if depth == 0 and b[:4] != b"\x1a\x45\xdf\xa3":
        return []
    # Element and block budgets: a WebM has hundreds of blocks, and their fields would
    # otherwise crowd out the header fields.
    budget = budget if budget is not None else [400, 6]
    fields = []
    pos = start
    while pos < end and budget[0] > 0:
        budget[0] -= 1
        eid = vint(b, pos, True)
        if eid is None:
            break
        esz = vint(b, pos + eid[1], False)
        if esz is None:
            break
        (ident, idlen), (size, szlen) = eid, esz
        szoff, body = pos + idlen, pos + idlen + szlen
        full = (1 << (7 * szlen)) - 1
        marker = 1 << (7 * szlen)
        if ident not in (0xA3, 0xA1) or budget[1] > 0:
            fields.append(Field(szoff, szlen, True, [marker | full, marker, marker | 1,
                                                     marker | (full - 1), marker | min(size + 1, full)],
                                f"{ident:x}-size", tag="len"))
        unknown = size == full
        if ident in EBML_MASTERS:
            fields += mkv_fields(b, body, end if unknown else min(body + size, end), depth + 1, budget)
            if unknown:
                break
        elif ident in EBML_FLOATS and size in (4, 8):
            values = FLOAT_EXTREMES if size == 8 else [struct.pack(">f", v) for v in
                                                       (0.0, -1.0, 1e30, float("inf"), float("nan"))]
            fields.append(Field(body, size, True, values, EBML_FLOATS[ident],
                                tag="dur" if ident == 0x4489 else ""))
        elif ident in EBML_UINTS and 1 <= size <= 8:
            fields.append(Field(body, size, True, [0, 1, (1 << (8 * size)) - 1, 1 << (8 * size - 1)],
                                EBML_UINTS[ident], tag="dur" if "time" in EBML_UINTS[ident] else ""))
        elif ident == 0x86 and size >= 6:
            fields.append(Field(body, size, True, [b"A_VORBIS", b"A_AAC\0\0\0", b"A_FLAC\0\0",
                                                   b"A_PCM/INT/LIT", b"V_VP8\0\0\0", b"\xff" * 8],
                                "codec-id"))
        elif ident == 0x63A2 and size >= 19 and b[body:body + 8] == b"OpusHead":
            fields += [Field(body + 9, 1, False, [0, 3, 8, 255], "opus-channels"),
                       Field(body + 10, 2, False, [0, 0xFFFF], "opus-preskip"),
                       Field(body + 18, 1, False, [1, 2, 255], "opus-mapping")]
        elif ident in (0xA3, 0xA1) and size >= 4 and budget[1] > 0:
            budget[1] -= 1
            fields += [Field(body, 1, True, [0x80, 0x82, 0xFF, 0x40], "block-track"),
                       Field(body + 1, 2, True, [0x7FFF, 0x8000, 0xFFFF], "block-timecode", tag="dur"),
                       Field(body + 3, 1, True, [0x00, 0x02, 0x04, 0x06, 0x80, 0xFF], "block-flags")]
        if unknown:
            break
        pos = body + size
    return fields


# ---------------------------------------------------------------- MP3

def mp3_fields(b):
    fields = []
    pos = 0
    if b[:3] == b"ID3" and len(b) >= 10:
        fields += [Field(3, 1, True, [2, 3, 4, 5, 0xFF], "id3-version"),
                   Field(5, 1, True, [0, 0x40, 0x80, 0xFF], "id3-flags"),
                   Field(6, 4, True, [0, 0x7F7F7F7F, 0x00007F7F, 0x01000000, 0xFFFFFFFF],
                         "id3-size", tag="len")]
        pos = 10 + sum((b[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4))
    headers = 0
    while pos + 4 <= len(b) and headers < 8:
        if b[pos] == 0xFF and b[pos + 1] & 0xE0 == 0xE0:
            fields += [
                Field(pos + 1, 1, True, [0, 1, 2, 3], "mpeg-version", mask=0x18, shift=3),
                Field(pos + 1, 1, True, [0, 1, 2, 3], "layer", mask=0x06, shift=1),
                Field(pos + 2, 1, True, [0, 1, 14, 15], "bitrate-index", mask=0xF0, shift=4),
                Field(pos + 2, 1, True, [0, 1, 2, 3], "rate-index", mask=0x0C, shift=2),
                Field(pos + 3, 1, True, [0, 1, 2, 3], "channel-mode", mask=0xC0, shift=6),
            ]
            for tag in (b"Xing", b"Info", b"VBRI"):
                x = b.find(tag, pos, pos + 64)
                if x > 0:
                    off = x + (10 if tag == b"VBRI" else 8)
                    fields += [Field(x + 4, 4, True, [0, 0xF, 0xFFFFFFFF], "xing-flags"),
                               Field(off, 4, True, [0, 1, 0x7FFFFFFF, 0xFFFFFFFF], "xing-frames",
                                     tag="dur")]
            headers += 1
            pos += mp3_frame_len(b[pos:pos + 4]) or 1
        else:
            pos += 1
    return fields


MP3_L3_KBPS = {True: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
               False: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]}


def mp3_frame_len(h):
    """Length of a Layer III frame from its 4-byte header, or 0 if it is not one."""
    version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    rate_index, bitrate_index = (h[2] >> 2) & 3, h[2] >> 4
    if version == 1 or layer != 1 or rate_index == 3 or bitrate_index in (0, 15):
        return 0
    mpeg1 = version == 3
    rate = [44100, 48000, 32000][rate_index] >> {3: 0, 2: 1, 0: 2}[version]
    kbps = MP3_L3_KBPS[mpeg1][bitrate_index]
    return (144 if mpeg1 else 72) * kbps * 1000 // rate + ((h[2] >> 1) & 1)


def header_fields(data):
    b = bytes(data)
    for parse in (wav_fields, flac_fields, ogg_fields, mp4_fields, mkv_fields, mp3_fields):
        try:
            fields = parse(b)
        except (IndexError, struct.error, ValueError, RecursionError):
            fields = []
        if fields:
            return fields
    return []


# ---------------------------------------------------------------- mutations

def region(rng, n):
    """A position in [0, n], biased towards the first 4 KiB where the headers are."""
    if n == 0:
        return 0
    if rng.random() < 0.5:
        return rng.randrange(min(n, 4096) + 1)
    return rng.randrange(n + 1)


def chunk_len(rng, n):
    return max(1, min(n, rng.choice([1, 2, 4, 16, 100, 417, 1024, 4096, 16384, 65536])))


def flip_bits(rng, buf, ctx):
    if not buf:
        return None
    count = rng.choice([1, 1, 2, 4, 8, 32, 128])
    for _ in range(count):
        i = min(region(rng, len(buf)), len(buf) - 1)
        buf[i] ^= 1 << rng.randrange(8)
    return f"flip{count}"


def set_bytes(rng, buf, ctx):
    if not buf:
        return None
    count = rng.choice([1, 2, 4, 8])
    for _ in range(count):
        width = rng.choice([1, 2, 4, 8])
        i = min(region(rng, len(buf)), max(len(buf) - width, 0))
        value = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                            (1 << 64) - 1]) & ((1 << (8 * width)) - 1)
        buf[i:i + width] = value.to_bytes(width, rng.choice(["big", "little"]))[: len(buf) - i]
    return f"set{count}"


def truncate(rng, buf, ctx):
    if len(buf) < 2:
        return None
    kind = rng.random()
    if kind < 0.3:
        cut = rng.randrange(1, min(len(buf), 1024))
    elif kind < 0.6:
        cut = len(buf) - rng.randrange(1, min(len(buf), 4096))
    else:
        cut = rng.randrange(1, len(buf))
    del buf[cut:]
    return f"trunc{cut}"


def insert_chunk(rng, buf, ctx):
    n = chunk_len(rng, 4096)
    i = region(rng, len(buf))
    filler = rng.choice(["random", "zero", "ff", "magic"])
    if filler == "random":
        chunk = rng.randbytes(n)
    elif filler == "zero":
        chunk = bytes(n)
    elif filler == "ff":
        chunk = b"\xff" * n
    else:
        chunk = rng.choice([b"OggS", b"RIFF", b"fLaC", b"\x1a\x45\xdf\xa3", b"ID3\x04", b"\xff\xfb",
                            b"moov", b"mdat", b"\x1f\x43\xb6\x75", b"OpusHead", b"\x01vorbis"])
    buf[i:i] = chunk
    return f"ins-{filler}{len(chunk)}"


def duplicate_chunk(rng, buf, ctx):
    if not buf:
        return None
    n = chunk_len(rng, len(buf))
    src = rng.randrange(len(buf) - n + 1)
    dst = region(rng, len(buf))
    times = rng.choice([1, 1, 2, 8])
    buf[dst:dst] = bytes(buf[src:src + n]) * times
    return f"dup{n}x{times}"


def delete_chunk(rng, buf, ctx):
    if len(buf) < 2:
        return None
    n = chunk_len(rng, len(buf) - 1)
    i = min(region(rng, len(buf)), len(buf) - n)
    del buf[i:i + n]
    return f"del{n}"


def swap_chunks(rng, buf, ctx):
    if len(buf) < 64:
        return None
    n = chunk_len(rng, len(buf) // 2)
    a = rng.randrange(len(buf) - 2 * n + 1)
    b = rng.randrange(a + n, len(buf) - n + 1)
    buf[a:a + n], buf[b:b + n] = bytes(buf[b:b + n]), bytes(buf[a:a + n])
    return f"swap{n}"


def corrupt_header(rng, buf, ctx, tags=None):
    fields = header_fields(buf)
    if tags:
        fields = [f for f in fields if f.tag in tags]
    if not fields:
        return None
    done = []
    for field in rng.sample(fields, min(len(fields), rng.choice([1, 1, 1, 2, 3]))):
        what = field.apply(buf, rng)
        if what:
            done.append(what)
    return ("hdr:" + ",".join(done)) if done else None


def huge_duration(rng, buf, ctx):
    what = corrupt_header(rng, buf, ctx, tags={"dur"})
    return what and what.replace("hdr:", "dur:", 1)


def bad_length(rng, buf, ctx):
    what = corrupt_header(rng, buf, ctx, tags={"len"})
    return what and what.replace("hdr:", "len:", 1)


def splice(rng, buf, ctx):
    other_name, other = rng.choice(ctx["fixtures"])
    if not other:
        return None
    cut_a = rng.randrange(len(buf) + 1) if buf else 0
    cut_b = rng.randrange(len(other) + 1)
    buf[cut_a:] = other[cut_b:]
    ctx["sources"].append(other_name)
    return f"splice:{other_name}@{cut_a}:{cut_b}"


def append_self(rng, buf, ctx):
    """Repeats the body after the first header so the stream runs longer than declared."""
    if len(buf) < 64:
        return None
    start = rng.randrange(min(len(buf), 4096))
    body = bytes(buf[start:])
    times = 1
    while len(buf) + len(body) <= SOFT_CAP and times < 16:
        buf += body
        times += 1
    return f"repeat{times}"


def zero_length(rng, buf, ctx):
    del buf[:]
    return "zero"


def tiny(rng, buf, ctx):
    n = rng.randrange(1, 65)
    if buf and rng.random() < 0.7:
        del buf[n:]
        return f"prefix{n}"
    buf[:] = rng.randbytes(n)
    return f"random{n}"


MUTATIONS = [
    (flip_bits, 14), (set_bytes, 8), (truncate, 12), (insert_chunk, 6), (duplicate_chunk, 6),
    (delete_chunk, 6), (swap_chunks, 3), (corrupt_header, 20), (huge_duration, 8),
    (bad_length, 6), (splice, 6), (append_self, 2), (zero_length, 1), (tiny, 2),
]


def mutate(rng, name, data, ctx):
    buf = bytearray(data)
    ops = []
    count = rng.choices([1, 2, 3], weights=[60, 30, 10])[0]
    funcs, weights = zip(*MUTATIONS)
    attempts = 0
    while len(ops) < count and attempts < 20:
        attempts += 1
        func = rng.choices(funcs, weights=weights)[0]
        label = func(rng, buf, ctx)
        if label:
            ops.append(label)
    # Most Ogg mutations keep valid page CRCs so that the demuxer, not the CRC check, sees them.
    if buf[:4] == b"OggS" and rng.random() < 0.8:
        ogg_fix_crcs(buf)
        ops.append("crc")
    if len(buf) > SOFT_CAP and rng.random() < 0.9:
        del buf[SOFT_CAP:]
        ops.append("cap")
    del buf[HARD_CAP:]
    return bytes(buf), ops or ["none"]


def extension_for(rng, source_ext):
    roll = rng.random()
    if roll < 0.85:
        return source_ext
    if roll < 0.95:
        return rng.choice([e for e in AUDIO_EXTS if e != source_ext])
    return rng.choice(ODD_EXTS)


def load_fixtures(root):
    fixtures = []
    for sub in ("voice", "edge", "bad"):
        for path in sorted((root / sub).iterdir()):
            if path.is_file() and path.suffix.lower() not in (".tsv", ".md", ".txt"):
                fixtures.append((f"{sub}/{path.name}", path.read_bytes()))
    return fixtures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parent.parent / "fixtures")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    fixtures = load_fixtures(args.fixtures)
    if not fixtures:
        sys.exit(f"mutate.py: no fixtures under {args.fixtures}")
    inputs = args.out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    width = len(str(args.count - 1))
    total = 0
    with open(args.out / "manifest.tsv", "w", encoding="utf-8") as manifest:
        manifest.write("file\tbytes\tsources\tmutations\n")
        for i in range(args.count):
            source, data = rng.choice(fixtures)
            ctx = {"fixtures": fixtures, "sources": [source]}
            out, ops = mutate(rng, source, data, ctx)
            stem = Path(source).stem[:20]
            ext = extension_for(rng, Path(source).suffix.lstrip("."))
            name = f"{i:0{width}d}-{stem}" + (f".{ext}" if ext else "")
            (inputs / name).write_bytes(out)
            total += len(out)
            manifest.write(f"{name}\t{len(out)}\t{'+'.join(ctx['sources'])}\t{' '.join(ops)}\n")
    print(f"mutate.py: wrote {args.count} files, {total / 1e6:.1f} MB, to {inputs}", file=sys.stderr)


if __name__ == "__main__":
    main()
