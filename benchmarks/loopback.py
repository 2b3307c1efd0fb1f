"""A whole run against a model server that answers in a fixed time, at a large `api`.

The project's workflow (provider=openai, a model without a price, so no cost estimate;
context=none, evaluation=none, apply_check=false, repair_attempts=0) against the loopback
server of the tests (tests/fake_api.py), which answers each request with the instance's
reference patch after `latency` seconds. N rows beyond the real ones in ../shared/data are
copies of them under new ids (benchmarks/scale.py). The ideal, for a server that answers
any number of requests at once, is ceil(N / api) x latency. Printed: the generation window
(first request to last answer) and the whole run (start to exit) against that ideal, the
most requests in flight, the CPU time of snakemake per instance and its peak memory. With --samples k and
--models m (m models of one server, models=[...]), each row is asked k x m times.

    .venv/bin/python benchmarks/loopback.py [--rows 2294] [--latency 5] [--api 128] [--cores 2] [--samples 1] [--models 1]
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scale import PROJECT, dataset_rows  # noqa: E402

from fake_api import FakeModelServer  # noqa: E402


def most_in_flight(starts, latency):
    events = sorted([(t, 1) for t in starts] + [(t + latency, -1) for t in starts], key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2294)
    parser.add_argument("--latency", type=float, default=5.0)
    parser.add_argument("--api", type=int, default=128)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--snakemake-args", default="", help="more snakemake options")
    args = parser.parse_args()
    rows = dataset_rows(args.rows)
    # the copies share their original's problem statement: the server needs only the originals
    originals = list({row["problem_statement"]: row for row in rows}.values())
    with tempfile.TemporaryDirectory() as tmp, FakeModelServer(originals, latency=args.latency) as server:
        server.httpd.socket.listen(1024)  # a backlog for `api` connections opened at once
        dataset = Path(tmp) / "rows.jsonl"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
                   str(Path(tmp) / "project"), "--cores", str(args.cores), "--quiet", "--resources",
                   f"api={args.api}", *args.snakemake_args.split(), "--config", f"dataset={dataset}",
                   "provider=openai", "model=local-model", f"base_url={server.url}/v1", "context=none",
                   "evaluation=none", "apply_check=false", "repair_attempts=0", "request_timeout=600",
                   f"samples={args.samples}"]
        if args.models > 1:
            command.append("models=[" + ", ".join(f"{{provider: openai, model: local-model-{n}, base_url: '{server.url}/v1'}}"
                                                  for n in range(1, args.models + 1)) + "]")
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, "OPENAI_API_KEY": "sk-loopback"})
        whole = time.monotonic() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            sys.exit(f"the run failed:\n{done.stderr[-3000:]}")
        starts = [r["at"] for r in server.requests]
    requests = args.rows * args.samples * args.models
    if len(starts) != requests:
        sys.exit(f"{len(starts)} requests for {args.rows} rows x {args.samples} samples x {args.models} models")
    ideal = math.ceil(requests / args.api) * args.latency
    window = max(starts) + args.latency - min(starts)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    print(f"{args.rows} rows x {args.samples} samples x {args.models} models, {args.latency:g} s per answer, "
          f"api={args.api}, {args.cores} cores: ideal {ideal:.0f} s")
    print(f"{'':<18} {'seconds':>8} {'ideal/it':>9}")
    print(f"{'generation window':<18} {window:>7.1f}s {ideal / window:>8.0%}")
    print(f"{'whole run':<18} {whole:>7.1f}s {ideal / whole:>8.0%}")
    print(f"first request after {min(starts) - started:.1f} s, last answer {started + whole - max(starts) - args.latency:.1f} s "
          f"before the end; at most {most_in_flight(starts, args.latency)} requests in flight; CPU {cpu:.0f} s "
          f"({1000 * cpu / args.rows:.1f} ms per instance, {1000 * cpu / requests:.1f} ms per answer); peak memory "
          f"{cpu_after.ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
