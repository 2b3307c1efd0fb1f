"""Recall of context=bm25 on the test repositories (tests/fixture_repos.py): how often the
files of the reference patch are in the context, at several budgets, with and without
distractors (real source files of the installed Python packages added to every repository,
so that each holds about as many files as a SWE-bench repository).

    .venv/bin/python benchmarks/context_recall.py [--distractors 0 2000] [--budgets 13000 4000 2000]
"""
import argparse
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from unidiff import PatchSet

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests")]  # run as a plain script

from scripts import context  # noqa: E402

import fixture_repos  # noqa: E402


def distractors(count):
    """count source files of the installed packages, {path: text}, by sorted path."""
    site = Path(sysconfig.get_paths()["purelib"])
    files = {}
    for path in sorted(site.rglob("*.py")):
        relative = path.relative_to(site).as_posix()
        if len(files) == count:
            break
        if context.is_source_file(relative, path.stat().st_size):
            try:
                files[relative] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
    return files


def measure(rows, settings, budget):
    found = found_whole = wanted = first_hits = whole = 0
    ranks, seconds = [], []
    for row in rows:
        gold = {f.path for f in PatchSet(row["patch"])}
        started = time.monotonic()
        record = context.build_context(row, "bm25", {**settings, "context_tokens": budget})
        seconds.append(time.monotonic() - started)
        shown = {f["path"] for f in record["files"]}
        found += len(gold & shown)
        found_whole += len(gold & {f["path"] for f in record["files"] if not f["truncated"]})
        wanted += len(gold)
        whole += gold <= shown
        first_hits += bool(record["files"]) and record["files"][0]["path"] in gold
        ranks.append(min((f["rank"] for f in record["files"] if f["path"] in gold), default=None))
    return {"file recall": found / wanted, "as whole files": found_whole / wanted,
            "instances with every file": whole / len(rows),
            "top file is a patch file": first_hits / len(rows), "ranks of the first patch file": ranks,
            "median seconds per context": statistics.median(seconds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--distractors", type=int, nargs="+", default=[0, 2000])
    parser.add_argument("--budgets", type=int, nargs="+", default=[13000, 4000, 2000])
    args = parser.parse_args()
    for count in args.distractors:
        extra = distractors(count)
        with tempfile.TemporaryDirectory() as tmp:
            rows, url = fixture_repos.build(tmp, extra)
            settings = {"repo_cache": f"{tmp}/cache", "repo_url": url}
            context.build_context(rows[0], "bm25", settings)  # clone the mirrors before timing
            print(f"{len(rows)} instances, {len(extra)} distractor files per repository")
            ranks = []
            for row in rows:
                ranking = [c["path"] for c in context.bm25_files(row, settings)[0]]
                ranks.append([ranking.index(f.path) + 1 if f.path in ranking else None for f in PatchSet(row["patch"])])
            print(f"  bm25 rank of each patch file, by instance: {ranks}")
            for budget in args.budgets:
                figures = measure(rows, settings, budget)
                print(f"  context_tokens={budget}: " + "; ".join(
                    f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
