#!/usr/bin/env python3
"""A small local HTTP server for the luaform test suite (standard library only).

Started by the Swift tests as

    python3 Tests/Support/http_test_server.py --port 0

It listens on 127.0.0.1 (port 0 = any free port), prints exactly one line
``PORT <n>`` to stdout once it is listening, and serves until it is killed.
Requests are handled concurrently, one daemon thread each. Nothing is logged.

Routes (GET unless noted):

  /company/<domain>[?delay=<ms>]  200 {"name": "<Domain>", "domain": "<domain>",
                                  "metrics": {"employees": 42}}; "missing.com" gives
                                  404 {"error": "unknown"}. With delay, sleeps first.
                                  Every request here counts towards /count.
  /slow?ms=<n>                    sleeps n ms, then 200 {"ok": true}
  /status/<code>                  that status, body {"status": <code>} (no body for
                                  1xx, 204 and 304, which cannot have one)
  /big?bytes=<n>                  200, n bytes of "x" (text/plain)
  /redirect?to=<url-encoded>      302 to that location
  /echo        (GET or POST)      200 {"method", "path", "headers" (lowercased names), "body"}
  /count                          200 {"hits": <requests received on /company/...>}
  /reset                          sets the /company/ counter back to 0, 200 {"hits": 0}
  /text                           200 "hello" (text/plain)
  /hang[/<anything>]              accepts the request, then sleeps 10 minutes (far longer
                                  than any test's limit) before answering 200 {"ok": true}:
                                  a server that hangs
  /abort[/<anything>]             reads the request, then closes the connection with a TCP
                                  RST (SO_LINGER 0) and never answers: a server that
                                  resets connections

Anything else is 404 {"error": "no such route"}.
"""

import argparse
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_hits_lock = threading.Lock()
_company_hits = 0


def _count_company_hit():
    global _company_hits
    with _hits_lock:
        _company_hits += 1


def _company_hit_count():
    with _hits_lock:
        return _company_hits


def _reset_company_hits():
    global _company_hits
    with _hits_lock:
        _company_hits = 0


def _int_param(query, name, default=0):
    """The first value of query parameter `name` as a non-negative int, else `default`."""
    values = query.get(name)
    if not values:
        return default
    try:
        return max(0, int(values[0]))
    except ValueError:
        return default


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, with Content-Length on every response
    server_version = "luaform-test-server"

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass

    # -- helpers ------------------------------------------------------------

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length:
            try:
                n = int(length)
            except ValueError:
                n = 0
            return self.rfile.read(n) if n > 0 else b""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0] or b"0", 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            return b"".join(chunks)
        return b""

    def _send(self, status, body, content_type="application/json", headers=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        if status < 200 or status in (204, 304):
            body = b""  # these statuses never carry a body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status >= 200 and status != 204:  # 1xx and 204 must not have Content-Length
            self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj), "application/json", headers)

    def _abort(self):
        """Closes the connection with a TCP RST instead of answering."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()       # drop the makefile() reference so close() really closes
        self.connection.close()  # linger 0: the kernel sends RST, not FIN

    # -- routing ------------------------------------------------------------

    def do_GET(self):
        self._route(self._read_body())

    def do_POST(self):
        self._route(self._read_body())

    def _route(self, body):
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)

        if path == "/echo":
            self._json(200, {
                "method": self.command,
                "path": self.path,
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body": body.decode("utf-8", errors="replace"),
            })
            return
        if self.command != "GET":
            self._json(405, {"error": "method not allowed"}, {"Allow": "GET"})
            return

        if path.startswith("/company/"):
            _count_company_hit()
            domain = unquote(path[len("/company/"):])
            delay = _int_param(query, "delay")
            if delay:
                time.sleep(delay / 1000.0)
            if domain == "missing.com":
                self._json(404, {"error": "unknown"})
            elif not domain:
                self._json(404, {"error": "no such route"})
            else:
                self._json(200, {
                    "name": domain[:1].upper() + domain[1:],
                    "domain": domain,
                    "metrics": {"employees": 42},
                })
        elif path == "/slow":
            time.sleep(_int_param(query, "ms") / 1000.0)
            self._json(200, {"ok": True})
        elif path.startswith("/status/"):
            try:
                code = int(path[len("/status/"):])
            except ValueError:
                code = 0
            if not 100 <= code <= 599:
                self._json(400, {"error": "bad status code"})
            else:
                self._json(code, {"status": code})
        elif path == "/big":
            self._send(200, b"x" * _int_param(query, "bytes"), "text/plain")
        elif path == "/redirect":
            location = (query.get("to") or ["/text"])[0]  # parse_qs already url-decodes
            self._json(302, {"location": location}, {"Location": location})
        elif path == "/count":
            self._json(200, {"hits": _company_hit_count()})
        elif path == "/reset":
            _reset_company_hits()
            self._json(200, {"hits": 0})
        elif path == "/text":
            self._send(200, "hello", "text/plain")
        elif path == "/hang" or path.startswith("/hang/"):
            time.sleep(600)
            self._json(200, {"ok": True})
        elif path == "/abort" or path.startswith("/abort/"):
            self._abort()
        else:
            self._json(404, {"error": "no such route"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # Clients that hang up mid-response (timeouts in tests) are expected: stay quiet.
        pass


def main():
    parser = argparse.ArgumentParser(description="Local HTTP server for the luaform tests.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    args = parser.parse_args()

    server = Server(("127.0.0.1", args.port), Handler)
    sys.stdout.write("PORT %d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
