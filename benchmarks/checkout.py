"""Time three ways to get a repository's files at one commit out of a bare mirror:
`git worktree add` (then removed), `git archive | tar -x` (scripts.repos.checkout), and
reading the source blobs straight from the mirror (what the context stage does).

The repository is built from the files of the installed Python packages, about the size
of a SWE-bench repository (django has about 6,600 files).

With --bundles: the time and disk of cloning the three real repositories of
../shared/data/repos/*.bundle over a loopback smart HTTP git server (tests/fake_git.py,
which filters and serves any commit by id as GitHub does), the server holding --pulls
pull request refs of 100 kB each: `git clone --mirror` (every ref, refs/pull/* included),
`git clone --bare` (branches and tags, every blob), and the repository cache (a bare partial
clone, then the blobs of the first Lite base commit; then those of every Lite base commit).

    .venv/bin/python benchmarks/checkout.py [--files 6600] [--repeat 3]
    .venv/bin/python benchmarks/checkout.py --bundles [--pulls 50]
"""
import argparse
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests")]  # run as a plain script, scripts/ is not on the path otherwise

from scripts import repos  # noqa: E402
from scripts.context import is_source_file  # noqa: E402


def build_repo(path, count):
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in site.rglob("*") if p.is_file() and p.stat().st_size < 1_000_000 and p.suffix != ".pyc")
    for source in files[:count]:
        target = path / source.relative_to(site)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "files"],
                   check=True)
    commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return commit.stdout.strip(), min(count, len(files))


def timed(action, repeat, cleanup=None):
    times = []
    for n in range(repeat):
        started = time.monotonic()
        action(n)
        times.append(time.monotonic() - started)
        if cleanup:
            cleanup(n)
    return statistics.median(times)


def disk(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def bundles(pulls):
    import json

    from fake_git import GitServer, serve_bundles

    rows = [json.loads(line) for line in (PROJECT.parent / "shared/data/swebench_lite_test.jsonl").open()]
    print("| repository | Lite rows | git clone --mirror (refs/pull/* too) | git clone --bare | partial clone + "
          "one base commit's blobs | + every Lite base commit's blobs | pull request refs |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        served = serve_bundles(tmp / "served", pull_refs=pulls)
        with GitServer(tmp / "served") as server:
            for repo in served:
                commits = [r["base_commit"] for r in rows if r["repo"] == repo]
                url = f"{server.url}/{repo}.git"
                cells = []
                for name, flag in (("mirror", "--mirror"), ("bare", "--bare")):
                    started = time.monotonic()
                    subprocess.run(["git", "clone", "--quiet", flag, url, str(tmp / name / repo)], check=True)
                    cells.append(f"{time.monotonic() - started:.1f} s, {disk(tmp / name / repo) / 1e6:.1f} MB")
                started = time.monotonic()
                mirror, _ = repos.ensure_commit(tmp / "cache", repo, commits[0], f"{server.url}/{{repo}}.git")
                cells.append(f"{time.monotonic() - started:.1f} s, {disk(mirror) / 1e6:.1f} MB")
                started = time.monotonic()
                for commit in commits[1:]:
                    repos.ensure_commit(tmp / "cache", repo, commit, f"{server.url}/{{repo}}.git")
                cells.append(f"+{time.monotonic() - started:.1f} s, {disk(mirror) / 1e6:.1f} MB")
                print(f"| {repo} | {len(commits)} | {' | '.join(cells)} | {pulls} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=6600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bundles", action="store_true", help="clone the real repositories of ../shared/data/repos")
    parser.add_argument("--pulls", type=int, default=50, help="pull request refs on the server (--bundles)")
    args = parser.parse_args()
    if args.bundles:
        return bundles(args.pulls)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        commit, count = build_repo(tmp / "src" / "bench" / "big", args.files)
        started = time.monotonic()
        mirror, _ = repos.ensure_commit(tmp / "cache", "bench/big", commit, f"{tmp}/src/{{repo}}")
        clone_time = time.monotonic() - started
        size = sum(f.stat().st_size for f in mirror.rglob("*") if f.is_file())

        def worktree(n):
            repos.git("worktree", "add", "--detach", "--quiet", str(tmp / f"worktree{n}"), commit, cwd=mirror)

        def remove_worktree(n):
            repos.git("worktree", "remove", "--force", str(tmp / f"worktree{n}"), cwd=mirror)

        def archive(n):
            repos.checkout(mirror, commit, tmp / f"archive{n}")

        tree = repos.list_files(mirror, commit)
        sources = [p for p in tree if is_source_file(p, tree[p][1])]

        def blobs(n):
            tree = repos.list_files(mirror, commit)
            repos.read_blobs(mirror, [tree[p][0] for p in sources])

        figures = {
            "git worktree add (removal not counted)": timed(worktree, args.repeat, remove_worktree),
            "git archive | tar -x": timed(archive, args.repeat),
            f"read the {len(sources)} source files from the mirror": timed(blobs, args.repeat),
        }
    print(f"repository: {count} files; mirror clone {clone_time:.2f} s, mirror size {size / 1e6:.1f} MB")
    for name, seconds in figures.items():
        print(f"{name}: {seconds:.3f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
