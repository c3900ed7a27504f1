#!/usr/bin/env python3
"""A bot-side voxq webhook receiver: verifies each delivery's Standard Webhooks
signature with the reference library (PyPI `standardwebhooks`, not voxq code), drops
duplicates (delivery is at-least-once: the same `webhook-id` may arrive twice), and
prints the transcript of every finished job.

    pip install standardwebhooks
    export VOXQ_WEBHOOK_SECRET=whsec_...   # from POST /v1/webhooks (or /v1/webhooks/secret)
    export VOXQ_API=http://127.0.0.1:8080 VOXQ_KEY=vxq_...   # to fetch thin payloads' text
    python3 examples/webhook_receiver.py --port 9000

Register it with `POST /v1/webhooks {"url": "https://bot.example.com/voxq"}` or give
it per job as `webhook_url`. `--once` exits after the first job event (used by the
tests). A bot would send the text to its chat where this prints it.
"""

import argparse
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

SEEN = set()


def transcript(data):
    """The text: in the payload when the endpoint asked for results, else fetched."""
    result = data.get("result")
    if result is not None and not result.get("text_truncated"):
        return result["text"]
    api, key = os.environ.get("VOXQ_API"), os.environ.get("VOXQ_KEY")
    if not api or not key:
        return "(set VOXQ_API and VOXQ_KEY to fetch the transcript)"
    request = urllib.request.Request(
        api.rstrip("/") + data["links"]["transcript"] + "?format=txt",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode("utf-8").strip()


class Handler(BaseHTTPRequestHandler):
    webhook = None
    once = False

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = self.webhook.verify(body, headers)
        except WebhookVerificationError as e:
            self.send_response(400)
            self.end_headers()
            print(f"rejected a delivery: {e}", file=sys.stderr, flush=True)
            return
        # Answer fast: voxq waits 15 s at most, and retries anything but 2xx.
        self.send_response(204)
        self.end_headers()
        if headers["webhook-id"] in SEEN:
            return
        SEEN.add(headers["webhook-id"])
        data = event["data"]
        if event["type"] == "job.completed":
            label = data.get("custom_id") or data["id"]
            print(f"{label}: {transcript(data)}", flush=True)
        elif event["type"] == "job.failed":
            print(f"{data['id']} failed: {data['error']['code']}: {data['error']['message']}", flush=True)
        else:
            print(f"{event['type']}: {json.dumps(data)}", flush=True)
        if self.once and event["type"].startswith("job."):
            raise SystemExit(0)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--once", action="store_true", help="exit after the first job event")
    args = parser.parse_args()
    Handler.webhook = Webhook(os.environ["VOXQ_WEBHOOK_SECRET"])
    Handler.once = args.once
    server = HTTPServer((args.host, args.port), Handler)
    print(f"listening on {args.host}:{server.server_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except SystemExit:
        pass


if __name__ == "__main__":
    main()
