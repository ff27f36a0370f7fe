"""A Baton client for Python 3.9 or newer, standard library only: enqueue a build over
`baton serve`, follow it live (server-sent events), and verify the signed webhook of its end.

Use the functions in your backend; run this file to see them work end to end:

    BATON_API_URL=http://127.0.0.1:8080 BATON_API_TOKEN=... BATON_WEBHOOK_SECRET=whsec_... \
    WEBHOOK_PORT=9001 python3 examples/python/baton_client.py

(the workers need BATON_WEBHOOK_URL=http://<this host>:9001/webhook and the same secret).
"""

import base64
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

FINAL = {"job_completed", "job_failed", "job_cancelled"}


def enqueue_build(api, token, job, idempotency_key=None):
    """Enqueues a build; the idempotency key makes a retry return the same build."""
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
    request = urllib.request.Request(
        f"{api}/v1/builds", data=json.dumps(job).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)  # {build_id, stream_id, status}
    except urllib.error.HTTPError as e:
        error = json.load(e).get("error", {})
        raise RuntimeError(f"enqueue: {e.code} {error.get('code')}: {error.get('message')}") from e


def follow_build(api, token, build_id):
    """Yields the build's events until its final one (job_completed, job_failed, job_cancelled).
    Reconnects after a dropped connection with Last-Event-ID, so nothing is missed or repeated."""
    last_id = None
    while True:
        headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        if last_id:
            headers["last-event-id"] = last_id
        url = f"{api}/v1/builds/{urllib.parse.quote(build_id, safe='')}/events"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as stream:
                frame = {"id": None, "data": ""}
                for raw in stream:
                    line = raw.decode().rstrip("\r\n")
                    if line == "":
                        if frame["data"]:
                            event = json.loads(frame["data"])
                            if frame["id"]:
                                last_id = frame["id"]
                            yield event
                            if event["event"] in FINAL:
                                return
                        frame = {"id": None, "data": ""}
                    elif line.startswith("id:"):
                        frame["id"] = line[3:].strip()
                    elif line.startswith("data:"):
                        frame["data"] += line[5:].lstrip()
                    # "event:" repeats the data's type; lines starting with ":" are keep-alives.
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)  # Dropped, or ended without a final event (a restart): reconnect.


def verify_webhook(secrets, headers, raw_body):
    """Verifies a webhook as Standard Webhooks says: the HMAC-SHA256 of "<id>.<timestamp>.<body>"
    with any of the secrets (comma-separated `whsec_<base64>`), and a timestamp within five
    minutes. Returns the parsed payload, or raises ValueError."""
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = (headers.get("webhook-signature") or "").split(" ")
    if not message_id or not timestamp:
        raise ValueError("missing webhook headers")
    if abs(time.time() - int(timestamp)) > 300:
        raise ValueError("stale timestamp")
    signed = f"{message_id}.{timestamp}.".encode() + raw_body
    for secret in filter(None, (s.strip() for s in secrets.split(","))):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for signature in signatures:
            version, _, value = signature.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return json.loads(raw_body)
    raise ValueError("no valid signature")


def receive_webhooks(port, secrets, on_webhook):
    """Receives webhooks on `port` in a thread; calls on_webhook(payload, id) for each verified one."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = verify_webhook(secrets, headers, body)
            except ValueError as e:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(str(e).encode())
                return
            self.send_response(204)  # Answer 2xx fast; Baton retries anything else.
            self.end_headers()
            on_webhook(payload, headers["webhook-id"])

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    api = os.environ.get("BATON_API_URL", "http://127.0.0.1:8080")
    token = os.environ.get("BATON_API_TOKEN", "")
    secrets = os.environ.get("BATON_WEBHOOK_SECRET", "")
    port = int(os.environ.get("WEBHOOK_PORT", "9001"))
    project = os.environ.get("PROJECT", "python-example")

    arrived = queue.Queue()
    server = receive_webhooks(port, secrets, lambda payload, mid: arrived.put((payload, mid)))
    job = {
        "kind": "create",
        "project_id": project,
        "version_id": f"{project}-v1",
        "prompt": "Create a hello-world page",
    }
    build = enqueue_build(api, token, job, idempotency_key=f"{project}-v1")
    events = []
    for event in follow_build(api, token, build["build_id"]):
        events.append(event["event"])
        print(event["event"], event.get("step", ""), event.get("session_id", ""), file=sys.stderr)
    payload, message_id = arrived.get(timeout=60)
    server.shutdown()
    print(
        json.dumps(
            {
                "build_id": build["build_id"],
                "events": events,
                "webhook_id": message_id,
                "webhook_type": payload["type"],
                "status": payload["data"]["status"],
                "session_id": payload["data"]["session_id"],
                "verified": True,
            }
        )
    )
    return 0 if payload["data"]["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
