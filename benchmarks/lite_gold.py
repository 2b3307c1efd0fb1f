"""Wall time of the whole SWE-bench Lite test split (300 rows) with provider=gold and
evaluation=none, and of the no-op rerun; checks that the predictions are the reference patches.

    .venv/bin/python benchmarks/lite_gold.py [--cores 2] [--dataset ../shared/data/swebench_lite_test.jsonl]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def run(workdir, cores, dataset, extra=()):
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
               str(workdir), "--cores", str(cores), "--quiet", *extra, "--config", f"dataset={dataset}", "evaluation=none"]
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--dataset", default=str(PROJECT.parent / "shared" / "data" / "swebench_lite_test.jsonl"))
    args = parser.parse_args()
    dataset = Path(args.dataset).resolve()
    rows = [json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as workdir:
        full = run(workdir, args.cores, dataset)
        noop = run(workdir, args.cores, dataset)
        dry = run(workdir, args.cores, dataset, ["--dry-run"])
        predictions = [json.loads(line) for line in (Path(workdir) / "results/gold/predictions.jsonl").read_text().splitlines()]
    reference = {r["instance_id"]: r["patch"] for r in rows}
    exact = sum(p["model_patch"] == reference[p["instance_id"]] for p in predictions)
    print(f"rows: {len(rows)}, predictions: {len(predictions)}, equal to the reference patch: {exact}")
    print(f"cores: {args.cores}, full run: {full:.1f} s, no-op rerun: {noop:.1f} s, dry run after: {dry:.1f} s")
    if exact != len(rows) or len(predictions) != len(rows):
        sys.exit("predictions differ from the reference patches")


if __name__ == "__main__":
    main()
