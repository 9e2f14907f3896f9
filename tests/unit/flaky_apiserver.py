"""A small HTTPS server that answers like the Kubernetes API server for one namespace's objects and fails
on cue, for the wmill clients' retry tests (tests/unit/test_runners_wmill_retry.py).

`plan` says what happens to the next requests, one word each, then every request is served: `drop` closes
the connection without an answer, `lose` carries the request out and then drops the connection (the answer is
lost), `503`, `webhook` (the API server's 500 for an admission webhook it could not call), `500` (another
internal error), `403`, `slow` (answers after `slow_seconds`). `start_later` leaves the port closed
(connection refused) until `listen()`. Objects live in `objects`, by their URL path; a create of a taken name
answers 409 AlreadyExists, as the API server does.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

WEBHOOK_DOWN = (
    'Internal error occurred: failed calling webhook "approve.kubemill.dev": failed to call webhook: Post '
    '"https://kubemill-webhook.kubemill-system.svc:443/approve?timeout=10s": dial tcp 10.0.0.12:443: '
    "connect: connection refused"
)
PLURALS = ("resources", "variables", "scriptruns", "flowruns", "configmaps")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the clients' CA file) and its key."""
    cert, key = directory / "ca.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}  # fmt: skip


class FlakyApiServer:
    def __init__(self, cert: Path, key: Path, start_later: bool = False) -> None:
        self.plan: list[str] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.slow_seconds = 2.0
        self._lock = threading.Lock()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        with socket.socket() as probe:  # a free port, closed until listen()
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._server: http.server.ThreadingHTTPServer | None = None
        if not start_later:
            self.listen()

    def listen(self) -> None:
        if self._server is not None:
            return
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        server.socket = self._context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _next(self) -> str:
        with self._lock:
            return self.plan.pop(0) if self.plan else "serve"

    def serve(self, method: str, target: str, body: Any) -> tuple[int, dict[str, Any]]:
        """What the API server would answer (objects of one namespace, a fieldSelector on spec.path)."""
        url = urllib.parse.urlsplit(target)
        path = url.path.rstrip("/")
        with self._lock:
            if method == "POST":
                name = body["metadata"]["name"]
                key = f"{path}/{name}"
                if key in self.objects:
                    return 409, _status(409, "AlreadyExists", f'"{name}" already exists')
                body["metadata"]["uid"] = str(uuid.uuid4())
                body["spec"] = dict(sorted(body["spec"].items()))  # the API server sorts keys
                self.objects[key] = body
                return 201, body
            if method == "GET" and path in self.objects:
                return 200, self.objects[path]
            if method == "GET":
                query = urllib.parse.parse_qs(url.query).get("fieldSelector", [""])[0]
                wanted = query.removeprefix("spec.path=") if query else None
                items = [
                    o
                    for k, o in self.objects.items()
                    if k.rsplit("/", 1)[0] == path and (wanted is None or o["spec"].get("path") == wanted)
                ]
                if path.rsplit("/", 1)[-1] in PLURALS:
                    return 200, {"kind": "List", "items": items}
            if method == "DELETE" and path in self.objects:
                del self.objects[path]
                return 200, _status(200, "", "deleted")
            return 404, _status(404, "NotFound", f"{path} not found")

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                owner.requests.append((self.command, self.path))
                step = owner._next()
                if step == "drop":
                    self.close_connection = True
                    return
                if step == "lose":
                    owner.serve(self.command, self.path, body)
                    self.close_connection = True
                    return
                if step == "slow":
                    time.sleep(owner.slow_seconds)
                canned = {
                    "503": (503, _status(503, "ServiceUnavailable", "the server is currently unable")),
                    "webhook": (500, _status(500, "InternalError", WEBHOOK_DOWN)),
                    "500": (500, _status(500, "InternalError", "Internal error occurred: etcdserver: boom")),
                    "403": (403, _status(403, "Forbidden", 'scriptruns.kubemill.dev is forbidden: User "x"')),
                }
                if step in canned:
                    self._answer(*canned[step])
                    return
                self._answer(*owner.serve(self.command, self.path, body))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
