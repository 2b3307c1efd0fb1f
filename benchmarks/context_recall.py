"""Recall of context=bm25 on the test repositories (tests/fixture_repos.py): how often the
files of the reference patch are in the context, at several budgets, with and without
distractors (real source files of the installed Python packages added to every repository,
so that each holds about as many files as a SWE-bench repository).

With --real: on the real repositories instead, the Lite test rows of psf/requests, pallets/flask
and pytest-dev/pytest, cloned from ../shared/data/repos/*.bundle (default budgets 13000 27000).

    .venv/bin/python benchmarks/context_recall.py [--distractors 0 2000] [--budgets 13000 4000 2000]
    .venv/bin/python benchmarks/context_recall.py --real [--budgets 13000 27000]
"""
import argparse
import json
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


def real(budgets):
    data = PROJECT.parent / "shared" / "data"
    rows = [json.loads(line) for line in (data / "swebench_lite_test.jsonl").open()]
    print("| repository | Lite rows | context_tokens | gold-patch files in the context | as whole files | "
          "rows with every file | top file is a gold file |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"repo_cache": tmp, "repo_url": f"{data}/repos/{{repo}}.bundle"}
        for repo in ("psf/requests", "pallets/flask", "pytest-dev/pytest"):
            chosen = [r for r in rows if r["repo"] == repo]
            for budget in budgets:
                f = measure(chosen, settings, budget)
                print(f"| {repo} | {len(chosen)} | {budget} | {f['file recall']:.2f} | {f['as whole files']:.2f} | "
                      f"{f['instances with every file']:.2f} | {f['top file is a patch file']:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--distractors", type=int, nargs="+", default=[0, 2000])
    parser.add_argument("--budgets", type=int, nargs="+")
    parser.add_argument("--real", action="store_true", help="the Lite rows of the three bundled repositories")
    args = parser.parse_args()
    if args.real:
        return real(args.budgets or [13000, 27000])
    args.budgets = args.budgets or [13000, 4000, 2000]
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
