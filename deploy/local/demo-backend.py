"""A tiny HTTP backend for the local demo: answers every request with its
name, so the demo can show where each request was routed, and, behind a
sidecar, with the caller's SPIFFE ID that the sidecar proved by mTLS and
passed on in x-forwarded-client-cert."""

import http.server
import sys

name, port = sys.argv[1], int(sys.argv[2])
address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"


def caller(xfcc):
    """The URI= element of the last (nearest) hop of an XFCC header."""
    for element in xfcc.split(",")[-1].split(";"):
        if element.startswith("URI="):
            return element[4:]
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        text = name
        uri = caller(self.headers.get("x-forwarded-client-cert", ""))
        if uri:
            text += f" (caller {uri})"
        body = f"{text}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((address, port), Handler).serve_forever()
