#!/usr/bin/env python3
"""Drives voxq's OpenAI-compatible endpoint with the official `openai` client (PyPI),
as a user switching from OpenAI would: base_url and api_key changed, nothing else.
Prints one JSON object of what each call gave; tests/tests/openai.rs checks it.

    python3 tests/scripts/openai_client.py BASE_URL KEY AUDIO_FILE
"""

import json
import sys

import openai
from openai import OpenAI


def main():
    base, key, audio = sys.argv[1:4]
    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
    with open(audio, "rb") as f:
        data = f.read()
    name = audio.rsplit("/", 1)[-1]

    def call(c=client, **kw):
        return c.audio.transcriptions.create(file=(name, data), **kw)

    out = {"client_version": openai.__version__}
    for fmt in ["json", "text", "srt", "verbose_json", "vtt"]:
        r = call(model="whisper-1", response_format=fmt)
        out[fmt] = r if isinstance(r, str) else r.model_dump()
    out["language_hint"] = call(model="whisper-1", language="en").text
    out["segment_granularity"] = call(
        model="whisper-1", response_format="verbose_json", timestamp_granularities=["segment"]
    ).model_dump()
    # The client's typed result: `words` as TranscriptionWord objects.
    words = call(model="whisper-1", response_format="verbose_json",
                 timestamp_granularities=["word"])
    out["word_granularity"] = words.model_dump()
    out["word_types"] = sorted({type(w).__name__ for w in (words.words or [])})
    out["both_granularities"] = call(
        model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["word", "segment"]
    ).model_dump()
    # The raw response carries the job id voxq stored.
    raw = client.audio.transcriptions.with_raw_response.create(
        file=(name, data), model="whisper-1"
    )
    out["job_id"] = raw.headers.get("x-voxq-job-id")
    errors = {}
    for label, kw, c in [
        ("bad_format", {"model": "whisper-1", "response_format": "mp3"}, client),
        ("bad_model", {"model": "whisper-9"}, client),
        ("granularity_without_verbose", {"model": "whisper-1", "response_format": "json",
                                         "timestamp_granularities": ["word"]}, client),
        ("bad_key", {"model": "whisper-1"},
         OpenAI(base_url=f"{base}/v1", api_key="vxq_" + "0" * 64, max_retries=0)),
    ]:
        try:
            call(c, **kw)
            errors[label] = {"raised": None}
        except openai.APIStatusError as e:
            errors[label] = {"raised": type(e).__name__, "status": e.status_code,
                             "code": e.code, "type": e.type, "message": e.message}
    out["errors"] = errors
    out["models"] = [m.id for m in client.models.list()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
