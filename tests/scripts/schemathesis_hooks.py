"""Schemathesis hooks for tests/tests/contract.rs: `application/x-ndjson` (a JSONL batch
manifest, and a batch's results), documented as an array of its lines' objects, which
schemathesis has no serializer or deserializer for. Loaded with
SCHEMATHESIS_HOOKS=<this file>.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson_request(ctx, value):
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@schemathesis.deserializer("application/x-ndjson")
def ndjson_response(ctx, response):
    lines = response.content.decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
