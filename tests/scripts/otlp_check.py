#!/usr/bin/env python3
"""Checks OTLP/HTTP JSON export bodies against OpenTelemetry's own protobuf definitions
(PyPI opentelemetry-proto): every body must parse as an ExportTraceServiceRequest with
no unknown field, and every trace and span id must be 16 and 8 bytes.

OTLP's JSON encoding writes ids as hex where protobuf's JSON mapping expects base64, so
ids are converted first, as the OTLP specification says a receiver must.

Usage: otlp_check.py FILE   (one JSON body per line)
Prints one line per span: trace_id span_id parent_span_id kind name service
"""
import base64
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)


def hex_ids_to_base64(body):
    for rs in body.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return body


def main(path):
    count = 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            message = json_format.Parse(
                json.dumps(hex_ids_to_base64(json.loads(line))),
                ExportTraceServiceRequest(),
                ignore_unknown_fields=False,
            )
            for rs in message.resource_spans:
                service = next(
                    a.value.string_value
                    for a in rs.resource.attributes
                    if a.key == "service.name"
                )
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        assert len(s.trace_id) == 16, s
                        assert len(s.span_id) == 8, s
                        assert len(s.parent_span_id) in (0, 8), s
                        assert s.end_time_unix_nano >= s.start_time_unix_nano > 0, s
                        print(
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex() or "-",
                            s.kind,
                            s.name,
                            service,
                        )
                        count += 1
    print(f"{count} spans parsed", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
