"""A local HTTP receiver for notification tests: records POSTs (body and headers) and answers each with the
next of `answers`: a status, ("redirect", url), or "drip" (the status line one byte at a time)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Receiver:
    def __init__(self, answers=(), drip_interval_s: float = 0.3, reply: bytes = b""):
        self.answers = list(answers)
        self.requests: list[tuple[str, bytes, dict]] = []  # (method, body, headers) of every request
        self.drip_interval_s = drip_interval_s
        self.reply = reply  # the answer's body (Slack's webhook answers `ok`, Telegram a JSON document)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = outer.answers.pop(0) if outer.answers else 200
                outer.requests.append((self.command, body, dict(self.headers)))
                if answer == "drip":
                    try:
                        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(outer.drip_interval_s)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if isinstance(answer, tuple):
                    self.send_response(302)
                    self.send_header("Location", answer[1])
                else:
                    self.send_response(answer)
                self.send_header("Content-Length", str(len(outer.reply)))
                self.end_headers()
                self.wfile.write(outer.reply)

            do_POST = do_GET = _handle  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def use_tls(self, certfile: str, keyfile: str) -> None:
        """Answer HTTPS (a self-signed certificate) instead of HTTP."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = self.url.replace("http://", "https://")

    @property
    def bodies(self) -> list:
        return [json.loads(b) for m, b, _ in self.requests if m == "POST" and b]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receivers():
    """Local HTTP receivers made by the test, closed after it."""
    made = []

    def make(*answers, **kw):
        r = Receiver(answers, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
