"""Loopback image registries for the tests and benchmarks that pull: Debian's docker-registry serving a folder,
and a stand-in of Docker Hub's rate limit in front of one."""
import contextlib
import http.client
import json
import subprocess
import time
import urllib.request

from loopback import LoopbackServer, QuietHandler


@contextlib.contextmanager
def serve_registry(storage, port):
    """Debian's docker-registry on 127.0.0.1:port, serving what storage holds."""
    config = storage.parent / f"config-{port}.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    # A session of its own: a Ctrl-C at the terminal stops the caller, not the registry, which serves until
    # the with block ends (a benchmark pulls from it while it cleans up).
    process = subprocess.Popen(["docker-registry", "serve", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):  # until the registry answers
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait()



class PacedRegistry(LoopbackServer):
    """A registry on 127.0.0.1:port in front of the one at backend, as Docker Hub limits pulls: every manifest
    answer carries `ratelimit-limit` and `ratelimit-remaining` (`N;w=SECONDS`); a pull (a GET of a repository's
    manifest; the GETs of one repository within 10 s are one pull, as Docker Hub counts up to two GETs as one)
    beyond `limit` in the last `window` seconds, or any while `refuse` is set, is answered with Docker Hub's 429."""

    TOO_MANY = {"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your pull rate limit. You may "
                            "increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}

    def __init__(self, port, backend, limit, window):
        self.pulls, self.refused, self.refuse = [], [], False  # pulls: (time, repository)
        registry = self

        class Handler(QuietHandler):
            def answer(self, method):
                extra, now = {}, time.time()
                if "/manifests/" in self.path:
                    repository = self.path.split("/v2/", 1)[1].split("/manifests/", 1)[0]
                    recent = [p for p in registry.pulls if p[0] > now - window]
                    if method == "GET" and not any(r == repository and t > now - 10 for t, r in recent):
                        if registry.refuse or len(recent) >= limit:
                            registry.refused.append((now, repository))
                            return self.send(429, {"Content-Type": "application/json",
                                                   "ratelimit-limit": f"{limit};w={window}",
                                                   "ratelimit-remaining": f"0;w={window}"},
                                             json.dumps(registry.TOO_MANY).encode(), method)
                        registry.pulls.append((now, repository))
                        recent.append((now, repository))
                    extra = {"ratelimit-limit": f"{limit};w={window}",
                             "ratelimit-remaining": f"{max(0, limit - len(recent))};w={window}"}
                connection = http.client.HTTPConnection("127.0.0.1", backend, timeout=60)
                connection.request(method, self.path, headers={k: v for k, v in self.headers.items()
                                                               if k.lower() not in ("host", "connection")})
                response = connection.getresponse()
                body = response.read()
                headers = {k: v for k, v in response.getheaders()
                           if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                headers["Content-Length"] = response.getheader("Content-Length") if method == "HEAD" else str(len(body))
                self.send(response.status, {**headers, **extra}, body, method)

            def send(self, status, headers, body, method):
                self.send_response(status)
                headers.setdefault("Content-Length", str(len(body)))
                for key, value in headers.items():
                    if value is not None:
                        self.send_header(key, value)
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                self.answer("GET")

            def do_HEAD(self):
                self.answer("HEAD")

        super().__init__(Handler, port)
        # The daemon tries TLS first, then plain HTTP: the TLS hello is no HTTP request.
        self.httpd.handle_error = lambda request, address: None

    def most_in_a_window(self, window):
        times = sorted(t for t, _ in self.pulls)
        return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)
