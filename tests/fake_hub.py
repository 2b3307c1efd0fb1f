"""A loopback server that speaks the parts of the Hugging Face hub's HTTP API that `huggingface_hub` and
`datasets` use to resolve and download a dataset's files: revision info, tree and paths-info listings,
and resolve (HEAD and GET, with the redirect to the file store that the hub gives for large files, ETag
and Range). Unknown repositories, revisions and files get the hub's 404 with its X-Error-Code header, so
the clients raise RepositoryNotFoundError, RevisionNotFoundError and EntryNotFoundError.

repos maps a hub name ("SWE-bench/SWE-bench_Lite") to {path in the repository: local file}; every
repository has one revision, "main". `downloads` lists the repository paths whose bytes were sent."""
import hashlib
import json
import re
import threading
import urllib.parse
from pathlib import Path

from loopback import LoopbackServer, QuietHandler

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hub"
# The hub names of the datasets in ../shared/data/hub/ and their splits.
SWE_BENCH = {
    "SWE-bench/SWE-bench_Lite": ("SWE-bench_Lite", ("dev", "test")),
    "SWE-bench/SWE-bench_Verified": ("SWE-bench_Verified", ("test",)),
    "SWE-bench/SWE-bench_Multilingual": ("SWE-bench_Multilingual", ("test",)),
    "SWE-bench/SWE-bench_Multimodal": ("SWE-bench_Multimodal", ("dev",)),
    "SWE-bench/SWE-bench": ("SWE-bench", ("dev",)),
}


def dataset_card(splits):
    """A README.md whose YAML header maps each split to its parquet files, as the hub's parquet datasets have."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    return "\n".join([*lines, "---", ""]).encode()


def parquet_repo(files, folder):
    """{repository path: bytes or local file} of a parquet dataset: its card and data/<split>-00000-of-00001.parquet
    for each split in files ({split: local parquet file})."""
    repo = {"README.md": dataset_card(files)}
    for split, path in files.items():
        repo[f"data/{split}-00000-of-00001.parquet"] = Path(path)
    return repo


def swe_bench_repos():
    return {
        name: parquet_repo({split: DATA / folder / f"{split}.parquet" for split in splits}, folder)
        for name, (folder, splits) in SWE_BENCH.items()
    }


class FakeHub(LoopbackServer):
    def __init__(self, repos=None):
        self.repos = {name: {path: self._entry(content) for path, content in files.items()}
                      for name, files in (swe_bench_repos() if repos is None else repos).items()}
        self.requests = []  # (method, path) of every request
        self.downloads = []  # (hub name, repository path) of every file whose bytes were sent
        self.lock = threading.Lock()
        super().__init__(self._handler())

    @staticmethod
    def _entry(content):
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        # The hub keeps large files in LFS: their ETag is the sha256 of the content, a git blob's the blob id.
        lfs = not isinstance(content, bytes)
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return {"data": data, "oid": oid, "sha256": hashlib.sha256(data).hexdigest() if lfs else None}

    @property
    def store_url(self):
        return f"http://localhost:{self.httpd.server_address[1]}"

    def sha(self, name):
        """The commit id of a repository's one revision, derived from its files."""
        digest = hashlib.sha1()
        for path, entry in sorted(self.repos[name].items()):
            digest.update(f"{path} {entry['oid']}\n".encode())
        return digest.hexdigest()

    def _handler(self):
        hub = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                self.route("HEAD")

            def do_GET(self):
                self.route("GET")

            def do_POST(self):
                self.route("POST")

            def route(self, method):
                url = urllib.parse.urlsplit(self.path)
                path = urllib.parse.unquote(url.path)
                with hub.lock:
                    hub.requests.append((method, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
                routes = [
                    (r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", self.info),
                    (r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<file>.*))?", self.tree),
                    (r"/api/datasets/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", self.paths_info),
                    (r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
                    (r"/store/(?P<repo>[^/]+/[^/]+)/(?P<rev>[^/]+)/(?P<file>.+)", self.store),
                ]
                for pattern, answer in routes:
                    match = re.fullmatch(pattern, path)
                    if match:
                        args = match.groupdict()
                        files = hub.repos.get(args["repo"])
                        if files is None:
                            return self.error(404, "RepoNotFound", "Repository not found")
                        rev = args.get("rev") or "main"
                        if rev not in ("main", hub.sha(args["repo"])):
                            return self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                        return answer(method, args["repo"], files, args.get("file"), url.query, body)
                self.error(404, None, "Sorry, we can't find the page you are looking for.")

            def error(self, status, code, message):
                data = json.dumps({"error": message}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def json(self, value):
                data = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def listing(self, path, entry):
                item = {"type": "file", "oid": entry["oid"], "size": len(entry["data"]), "path": path}
                if entry["sha256"]:
                    item["lfs"] = {"oid": entry["sha256"], "size": len(entry["data"]), "pointerSize": 134}
                return item

            def folders(self, files):
                return sorted({str(parent) for path in files for parent in Path(path).parents if str(parent) != "."})

            def info(self, method, repo, files, _file, _query, _body):
                sha = hub.sha(repo)
                self.json({"_id": sha[:24], "id": repo, "author": repo.split("/")[0], "sha": sha, "private": False,
                           "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                           "lastModified": "2026-08-01T00:00:00.000Z", "createdAt": "2026-08-01T00:00:00.000Z",
                           "siblings": [{"rfilename": path} for path in sorted(files)], "cardData": {}})

            def tree(self, method, repo, files, folder, query, _body):
                folder = (folder or "").strip("/")
                recursive = urllib.parse.parse_qs(query).get("recursive", ["false"])[0] in ("true", "True", "1")
                if folder and folder not in files and folder not in self.folders(files):
                    return self.error(404, "EntryNotFound", f"{folder} does not exist on \"main\"")
                prefix = f"{folder}/" if folder else ""
                items = []
                for sub in self.folders(files):
                    if sub.startswith(prefix) and (recursive or "/" not in sub[len(prefix):]):
                        items.append({"type": "directory", "oid": hashlib.sha1(sub.encode()).hexdigest(), "size": 0,
                                      "path": sub})
                for path, entry in sorted(files.items()):
                    if path.startswith(prefix) and (recursive or "/" not in path[len(prefix):]):
                        items.append(self.listing(path, entry))
                self.json(items)

            def paths_info(self, method, repo, files, _file, _query, body):
                if method != "POST":
                    return self.error(405, None, "Method not allowed")
                if "json" in (self.headers.get("Content-Type") or ""):
                    paths = json.loads(body or b"{}").get("paths", [])
                else:
                    paths = urllib.parse.parse_qs(body.decode()).get("paths", [])
                folders = self.folders(files)
                items = []
                for path in paths:
                    path = path.strip("/")
                    if path in files:
                        items.append(self.listing(path, files[path]))
                    elif path in folders:
                        items.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                                      "path": path})
                self.json(items)

            def resolve(self, method, repo, files, file, _query, _body):
                entry = files.get(file)
                if entry is None:
                    return self.error(404, "EntryNotFound", f"{file} does not exist on \"main\"")
                if entry["sha256"]:
                    # Large files: the hub answers with a redirect to its file store and names the file's
                    # ETag and size in X-Linked-* headers.
                    self.send_response(302)
                    # The store is another origin (localhost, where the hub is 127.0.0.1), as the hub's CDN is.
                    self.send_header("Location", f"{hub.store_url}/store/{repo}/{hub.sha(repo)}/{urllib.parse.quote(file)}")
                    self.send_header("X-Repo-Commit", hub.sha(repo))
                    self.send_header("X-Linked-Etag", f'"{entry["sha256"]}"')
                    self.send_header("X-Linked-Size", str(len(entry["data"])))
                    self.send_header("ETag", f'W/"{entry["oid"]}"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_file(method, repo, file, entry, f'"{entry["oid"]}"', {"X-Repo-Commit": hub.sha(repo)})

            def store(self, method, repo, files, file, _query, _body):
                entry = files.get(file)
                if entry is None or not entry["sha256"]:
                    return self.error(404, None, "Not found")
                self.send_file(method, repo, file, entry, f'"{entry["sha256"]}"', {})

            def send_file(self, method, repo, file, entry, etag, headers):
                data = entry["data"]
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                start, end = (int(match[1]), int(match[2] or len(data) - 1)) if match else (0, len(data) - 1)
                if start >= len(data) and data:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                part = data[start:end + 1]
                self.send_response(206 if match else 200)
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(part)))
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{start + len(part) - 1}/{len(data)}")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if method == "GET":
                    self.wfile.write(part)
                    with hub.lock:
                        hub.downloads.append((repo, file))

        return Handler
