"""Throughput of generation: 300 instances against a loopback model server with a fixed
latency per request, run with --cores 16 --resources api=16, against the ideal
ceil(300 / 16) x latency.

    .venv/bin/python benchmarks/provider_throughput.py [--rows 300] [--latency 1.0] [--jobs 16]

The prompts are built first (snakemake --until prompt); then the timed run does the rest
(generate, patch, predictions, summary). The generation window is the time from the
first request the server receives to the last answer it sends.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))
from fake_api import FakeModelServer  # noqa: E402


def snakemake(workdir, jobs, config, *extra):
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
               str(workdir), "--cores", str(jobs), "--resources", f"api={jobs}", "--quiet", *extra,
               "--config", *config]
    env = dict(os.environ, OPENAI_API_KEY="benchmark-key")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--dataset", default=str(PROJECT.parent / "shared" / "data" / "swebench_lite_test.jsonl"))
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.dataset).read_text().splitlines() if line.strip()][: args.rows]
    with tempfile.TemporaryDirectory() as workdir, FakeModelServer(rows, latency=args.latency) as server:
        dataset = Path(workdir) / "rows.jsonl"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = [f"dataset={dataset}", "provider=openai", f"base_url={server.url}/v1", "model=gpt-4o",
                  "evaluation=none", "context=none"]
        snakemake(workdir, args.jobs, config, "--until", "prompt")
        started = time.monotonic()
        snakemake(workdir, args.jobs, config)
        makespan = time.monotonic() - started
        starts = sorted(r["at"] for r in server.requests)
        predictions = (Path(workdir) / "results/openai-gpt-4o/predictions.jsonl").read_text().splitlines()
    window = starts[-1] + args.latency - starts[0]
    in_flight = max(sum(1 for s in starts if t <= s < t + args.latency) for t in starts)
    ideal = math.ceil(len(rows) / args.jobs) * args.latency
    print(f"instances: {len(rows)}, requests: {len(starts)}, predictions: {len(predictions)}")
    print(f"latency per request: {args.latency} s, --cores {args.jobs} --resources api={args.jobs}, "
          f"most requests in flight: {in_flight}")
    print(f"ideal: {ideal:.1f} s; generation window: {window:.1f} s ({ideal / window:.0%} of ideal); "
          f"whole timed run (generate, patch, merge, summary): {makespan:.1f} s ({ideal / makespan:.0%} of ideal)")


if __name__ == "__main__":
    main()
