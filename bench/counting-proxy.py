#!/usr/bin/env python3
"""bench/counting-proxy.py: a loopback HTTP/1.1 proxy that counts AWS calls per operation.

Usage: counting-proxy.py UPSTREAM_PORT [PORT]

Forwards every request unchanged (headers included, so SigV4 signatures still verify) to
127.0.0.1:UPSTREAM_PORT (moto_server) and counts it by operation: the X-Amz-Target header for
the JSON protocols (secretsmanager.BatchGetSecretValue, AmazonSSM.GetParameters), else
"<service>.<Action>" for the query protocols (sts.AssumeRoleWithWebIdentity). Requests are
counted, not connections: answers go back with a Content-Length and without moto's
"Connection: close", so a client may keep its connection open for the next request.

Control paths (not counted, not forwarded):
  GET  /__counts   -> {"operation": count, ...}
  POST /__reset    -> forget the counts

Prints "listening on PORT" on stdout once ready. Loopback only. Standard library only.
"""

import http.client
import http.server
import json
import re
import sys
import threading
import urllib.parse

UPSTREAM = int(sys.argv[1])
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade",
              "te", "trailer", "content-length"}
SCOPE = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/([^/]+)/aws4_request")

counts = {}
lock = threading.Lock()


def operation(headers, body):
    target = headers.get("X-Amz-Target")
    if target:
        return target
    scope = SCOPE.search(headers.get("Authorization", ""))
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    action = (form.get("Action") or ["?"])[0]
    return f"{scope.group(2)}.{action}" if scope else action


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests per connection

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/__counts":
            with lock:
                body = json.dumps(counts, sort_keys=True).encode()
            return self.answer(200, body, [("Content-Type", "application/json")])
        self.forward()

    def do_POST(self):
        if self.path == "/__reset":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                counts.clear()
            return self.answer(200, b"{}")
        self.forward()

    def forward(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.answer(501, b'{"message":"chunked request bodies are not supported"}')
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        op = operation(self.headers, body)
        upstream = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            payload = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            status = response.status
        except OSError as error:
            status, payload, headers = 502, json.dumps({"message": str(error)}).encode(), []
        finally:
            upstream.close()
        # Counted before the client has its answer: once the client is done, so is the count.
        with lock:
            counts[op] = counts.get(op, 0) + 1
        self.answer(status, payload, headers)


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
