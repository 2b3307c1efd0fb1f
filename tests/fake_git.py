"""A loopback git server speaking smart HTTP: `git http-backend` (CGI) behind a small HTTP server, serving
the bare repositories under a root folder at <url>/<owner>/<name>.git. Like GitHub, it lets clients filter
(uploadpack.allowFilter, so --filter=blob:none gives a partial clone) and ask for any object by id
(uploadpack.allowAnySHA1InWant). `requests` records the (method, path?query) of every request; `hang`
set makes it take requests and never answer.

serve_bundles() makes the repositories from ../shared/data/repos/*.bundle, with pull request refs
(refs/pull/N/head) added as GitHub has them, so that a test can show they are not fetched."""
import os
import subprocess
import threading
from pathlib import Path

from loopback import LoopbackServer, QuietHandler

BUNDLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "repos"
SERVER_CONFIG = {"uploadpack.allowFilter": "true", "uploadpack.allowAnySHA1InWant": "true", "http.receivepack": "false"}


def git(*args, cwd=None, stdin=None):
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=True).stdout


def serve_repository(root, repo, source, pull_refs=0):
    """A bare repository at root/<repo>.git from source (a bundle or a repository), set up as GitHub serves
    it, with pull_refs refs/pull/N/head: each a commit of its own, with a file of 100 kB no branch holds."""
    target = Path(root) / f"{repo}.git"
    git("clone", "--mirror", "--quiet", str(source), str(target))
    for key, value in SERVER_CONFIG.items():
        git("config", key, value, cwd=target)
    if pull_refs:
        head = git("for-each-ref", "--count=1", "--format=%(objectname)", "refs/heads", cwd=target).decode().strip()
        for n in range(1, pull_refs + 1):
            # 100 kB that do not compress, as a pull request's own files would be
            blob = git("hash-object", "-w", "--stdin", cwd=target, stdin=os.urandom(100_000)).decode().strip()
            tree = git("mktree", cwd=target, stdin=f"100644 blob {blob}\tPULL_{n}.txt\n".encode()).decode().strip()
            commit = git("-c", "user.name=pr", "-c", "user.email=pr@example.com", "commit-tree", tree, "-p", head,
                         "-m", f"pull request {n}", cwd=target).decode().strip()
            git("update-ref", f"refs/pull/{n}/head", commit, cwd=target)
    return target


def serve_bundles(root, pull_refs=0):
    """The three bundles' repositories under root; returns {owner/name: path}."""
    return {repo: serve_repository(root, repo, BUNDLES / f"{repo}.bundle", pull_refs)
            for repo in ("psf/requests", "pallets/flask", "pytest-dev/pytest")}


class GitServer(LoopbackServer):
    def __init__(self, root):
        self.root = Path(root)
        self.requests = []
        self.hang = threading.Event()
        self.released = threading.Event()  # set when the server closes: hanging requests end
        super().__init__(self._handler())

    def __exit__(self, *exc):
        self.released.set()
        super().__exit__(*exc)

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                self.backend()

            def do_POST(self):
                self.backend()

            def body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if not size:
                            return data
                        data += chunk
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def backend(self):
                server.requests.append((self.command, self.path))
                body = self.body() if self.command == "POST" else b""
                if server.hang.is_set():
                    server.released.wait()
                    return
                path, _, query = self.path.partition("?")
                env = {"GIT_PROJECT_ROOT": str(server.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                       "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_ADDR": "127.0.0.1",
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                       "PATH": "/usr/bin:/bin"}
                for header in ("Git-Protocol", "Content-Encoding"):
                    if self.headers.get(header):
                        env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
                result = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env)
                head, _, payload = result.stdout.partition(b"\r\n\r\n")
                headers = [line.split(b": ", 1) for line in head.split(b"\r\n") if b": " in line]
                status = next((int(v.split()[0]) for k, v in headers if k.lower() == b"status"), 200)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != b"status":
                        self.send_header(key.decode(), value.decode())
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
