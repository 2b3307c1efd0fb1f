"""Repository cache: one bare mirror per repository, fetched once and shared by every job.

A mirror lives at <repo_cache>/<owner>__<name>.git and is cloned from the `repo_url`
template ("{repo}" becomes owner/name). A file lock per repository makes concurrent jobs
wait for the one that clones or fetches; a clone goes to a temporary name first, so a
killed job never leaves a half-made mirror. Files at a commit are read straight from the
mirror's objects (no checkout); `checkout` writes a commit's tree to a folder with
`git archive`, which leaves the mirror untouched (benchmarks/checkout.py compares it with
worktrees).

A mirror holds branches and tags only: a hosting service's other refs (GitHub's refs/pull/*)
would multiply the size of a repository like django. It is a partial clone without blobs
(--filter=blob:none) where the server allows it; the blobs of a commit that a job reads are
fetched in one go when the commit is first asked for, and a commit that no branch or tag holds
is fetched by its id. Every git call has a time limit (GIT_TIMEOUT): a server that stops
answering is a fetch error, which the stages report as an infrastructure fault.

    python -m scripts.repos fetch --repo-cache DIR --repo-url URL --repo OWNER/NAME --commit SHA
    python -m scripts.repos checkout --repo-cache DIR --repo-url URL --repo OWNER/NAME --commit SHA --dest DIR
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from filelock import FileLock

DEFAULT_URL = "https://github.com/{repo}.git"
REPO_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
# Never ask for a password: a repository that needs one is a fetch error.
GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}


class RepoError(Exception):
    pass


# Seconds any one git call may take, fetches included (a partial clone of django takes about a
# minute on a good link); past it the call is killed with the processes it started.
GIT_TIMEOUT = 900
# Only branches and tags, never refs/pull/* and the like.
REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


def git(*args, cwd=None, check=True, stdin=None, timeout=None):
    # A session of its own, so that a timeout kills git's helpers (git-remote-http...) too:
    # they hold the pipes open, and waiting for them would outlast the limit.
    timeout = timeout or GIT_TIMEOUT
    process = subprocess.Popen(["git", *args], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=GIT_ENV, start_new_session=True)
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        raise RepoError(f"git {' '.join(args[:2])} got no answer within {timeout:g} s (GIT_TIMEOUT)") from None
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise RepoError(f"git {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
    return result


def repo_url(url_template, repo):
    return url_template.replace("{repo}", repo)


def mirror_path(repo_cache, repo):
    if not REPO_NAME.fullmatch(repo) or ".." in repo:
        raise RepoError(f"repo {repo!r} is not of the form owner/name.")
    return Path(repo_cache) / (repo.replace("/", "__") + ".git")


def has_commit(mirror, commit):
    # rev-list --missing: in a partial clone, cat-file -e would fetch a missing commit unasked.
    return git("rev-list", "-n1", "--no-walk", "--missing=print", f"{commit}^{{commit}}", "--", cwd=mirror,
               check=False).returncode == 0


def fetch(url, mirror, *args, stdin=None, timeout=None):
    result = git("fetch", "--quiet", *args, cwd=mirror, check=False, stdin=stdin, timeout=timeout)
    if result.returncode != 0:
        raise RepoError(f"cannot fetch {url}: {result.stderr.decode(errors='replace').strip()}")


def clone(url, mirror, timeout=None):
    # git makes the folder (not tempfile.mkdtemp, whose folders are 0700): the umask gives its mode
    tmp = mirror.parent / f".{mirror.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        # A bare clone takes branches and tags (--mirror would take every ref); a server or a
        # local path that does not filter sends the blobs too, with a warning.
        result = git("clone", "--bare", "--quiet", "--filter=blob:none", url, str(tmp), check=False, timeout=timeout)
        if result.returncode != 0:
            raise RepoError(f"cannot fetch {url}: {result.stderr.decode(errors='replace').strip()}")
        git("config", "--unset-all", "remote.origin.fetch", cwd=tmp, check=False)
        for refspec in REFSPECS:
            git("config", "--add", "remote.origin.fetch", refspec, cwd=tmp)
        # Attributes in info/ outrank the tree's own .gitattributes, whose export-ignore and
        # export-subst would make git archive drop or rewrite files.
        (tmp / "info").mkdir(exist_ok=True)
        (tmp / "info" / "attributes").write_text("* -export-ignore -export-subst\n")
        os.replace(tmp, mirror)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def missing_objects(mirror, commit):
    """The ids of the objects of commit's tree that a partial clone has not fetched yet."""
    out = git("rev-list", "--objects", "--no-walk", "--missing=print", commit, cwd=mirror).stdout.decode()
    return [line[1:] for line in out.splitlines() if line.startswith("?")]


def ensure_commit(repo_cache, repo, commit, url_template=DEFAULT_URL, timeout=None):
    """The mirror of repo, holding commit and every file of its tree: cloned or fetched if need
    be, each git call within timeout seconds (GIT_TIMEOUT). Returns (path, action) with action
    "cached", "cloned" or "fetched"."""
    mirror = mirror_path(repo_cache, repo)
    if mirror.is_dir() and has_commit(mirror, commit) and not missing_objects(mirror, commit):
        return mirror, "cached"
    url = repo_url(url_template, repo)
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{mirror}.lock"):
        # Another job may have cloned or fetched while this one waited for the lock.
        action = "cached"
        if not mirror.is_dir():
            clone(url, mirror, timeout)
            action = "cloned"
        else:  # repo_url may have changed since the clone
            git("config", "remote.origin.url", url, cwd=mirror)
        if not has_commit(mirror, commit):
            # By id first (GitHub serves any commit it has, a pull request's too); a server that
            # will not (a bundle, uploadpack.allowAnySHA1InWant off) gets its branches and tags fetched.
            if not re.fullmatch(r"[0-9a-f]{40}", commit) or git(
                    "fetch", "--quiet", "--no-tags", "origin", commit, cwd=mirror, check=False,
                    timeout=timeout).returncode != 0:
                fetch(url, mirror, "--prune", "origin", timeout=timeout)
            action = "fetched" if action == "cached" else action
        if not has_commit(mirror, commit):
            raise RepoError(f"commit {commit} of {repo} is not in {url} (mirror: {mirror}).")
        missing = missing_objects(mirror, commit)
        if missing:
            # The blobs of a partial clone, in one request rather than one per file read.
            fetch(url, mirror, "--no-tags", "--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none",
                  "--stdin", "origin", stdin="".join(f"{oid}\n" for oid in missing).encode(), timeout=timeout)
            action = "fetched" if action == "cached" else action
    return mirror, action


def list_files(mirror, commit):
    """{path: (blob id, size in bytes)} of the regular files in commit's tree."""
    out = git("ls-tree", "-r", "-z", "--long", commit, cwd=mirror).stdout.decode("utf-8", errors="surrogateescape")
    files = {}
    for entry in filter(None, out.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, blob, size = meta.split()
        if kind == "blob" and mode in ("100644", "100755"):
            files[path] = (blob, int(size))
    return files


def read_blobs(mirror, blobs):
    """The bytes of each blob id, in one `git cat-file --batch` call."""
    if not blobs:
        return []
    out = git("cat-file", "--batch", cwd=mirror, stdin="".join(f"{b}\n" for b in blobs).encode()).stdout
    contents, pos = [], 0
    for _ in blobs:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        contents.append(out[header_end + 1:header_end + 1 + size])
        pos = header_end + 1 + size + 1  # the content is followed by a newline
    return contents


def read_files(mirror, commit, paths):
    """{path: text} of the given paths at commit; files that are not text are left out."""
    tree = list_files(mirror, commit)
    missing = [p for p in paths if p not in tree]
    if missing:
        raise RepoError(f"{', '.join(missing)} not in commit {commit} of {mirror.name}.")
    texts = {}
    for path, data in zip(paths, read_blobs(mirror, [tree[p][0] for p in paths]), strict=True):
        try:
            texts[path] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def checkout(mirror, commit, dest):
    """Write commit's tree to dest (a new folder) with git archive."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=mirror, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=GIT_ENV)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    error = archive.stderr.read().decode(errors="replace").strip()
    if archive.wait() != 0 or untar.returncode != 0:
        raise RepoError(f"cannot check out {commit} of {mirror.name}: {error or untar.stderr.decode().strip()}")
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch a repository into the cache, or check out one commit.")
    parser.add_argument("action", choices=["fetch", "checkout"])
    parser.add_argument("--repo-cache", required=True)
    parser.add_argument("--repo-url", default=DEFAULT_URL)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--dest", help="folder to create (checkout)")
    args = parser.parse_args(argv)
    try:
        mirror, action = ensure_commit(args.repo_cache, args.repo, args.commit, args.repo_url)
        print(f"repos: {args.repo} {action} ({mirror})", file=sys.stderr)
        if args.action == "checkout":
            if not args.dest:
                parser.error("checkout needs --dest")
            checkout(mirror, args.commit, args.dest)
    except RepoError as e:
        sys.exit(f"repos: {e}")


if __name__ == "__main__":
    main()
