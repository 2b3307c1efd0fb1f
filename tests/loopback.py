"""An HTTP server on 127.0.0.1 that serves in a thread of its own while a with block runs: the base of the
tests' stand-ins for real services."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that leaves the tests' output alone (the base class logs every request to stderr)."""

    def log_message(self, *args):
        pass


class LoopbackServer:
    def __init__(self, handler, port=0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        # shutdown() waits for the serving loop's next look at it: every 0.05 s, not the default 0.5 s
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
