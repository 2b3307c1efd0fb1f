"""The workflow against the floor that Snakemake itself sets, at SWE-bench scale.

For N instances (default 300 and 2,294, the size of SWE-bench full; 11,470 is five samples of
each; rows beyond the real ones in ../shared/data are copies of them under new ids), run in a
fresh folder:
- the project's workflow with provider=gold (answers at once) and evaluation=none;
- benchmarks/floor/Snakefile: the same DAG shape, jobs that only touch their outputs;
and report for each the dry-run time (fresh folder), the full-run time, the no-op rerun
time (each of these two the median of three runs), the peak memory (VmHWM) of the main
snakemake process and the CPU time of the full run (snakemake and what it started), in all
and per instance.

    .venv/bin/python benchmarks/scale.py [--rows 300 2294 11470] [--cores 2] [--scheduler greedy]
        [--full-only] [--project-only] [--snakemake-args '--scheduler-subsample 0 ...']
"""
import argparse
import itertools
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data"
# What profiles/default sets for scheduling, given to the floor (which has no profile) so that both
# are measured alike; --snakemake-args overrides it for both.
FLOOR_PROFILE = ["--scheduler-subsample", "100", "--max-jobs-per-timespan", "10000/1s"]


def dataset_rows(count):
    real = [json.loads(line) for name in ("swebench_lite_test.jsonl", "swebench_lite_dev.jsonl")
            for line in (DATA / name).read_text().splitlines() if line.strip()]
    rows = []
    for copy, row in zip(range(count), itertools.cycle(real)):
        lap = copy // len(real)
        rows.append(dict(row, instance_id=row["instance_id"] + (f"-copy{lap}" if lap else "")))
    return rows


def peak_rss_mb(pid, peak, done):
    """Poll the process's high-water mark of resident memory until it ends."""
    while not done.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.05)


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command, cpu=None):
    """(seconds, peak MB of the main process) of one snakemake run; with a dict `cpu`, its
    CPU seconds (user and system, of snakemake and of every process it started) in cpu["s"]."""
    started, cpu_before = time.monotonic(), children_cpu()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = [0.0], threading.Event()
    watcher = threading.Thread(target=peak_rss_mb, args=(process.pid, peak, done))
    watcher.start()
    _, stderr = process.communicate()
    done.set()
    watcher.join()
    if process.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    if cpu is not None:
        cpu["s"] = children_cpu() - cpu_before
    return time.monotonic() - started, peak[0]


def measure(snakefile, workdir, cores, extra, config, full_only=False):
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
            "--cores", str(cores), "--quiet", *extra, "--config", *config]
    cpu = {}
    if full_only:
        full, full_mb = timed(base, cpu)
        return {"dry": float("nan"), "full": full, "noop": float("nan"), "peak_mb": full_mb, "cpu": cpu["s"]}
    # Dry and no-op runs take seconds, and one of them varies by a third on this machine (a cold
    # disk cache, the other core busy): the median of three.
    dry, dry_mb = median_of_three(base + ["--dry-run"])
    full, full_mb = timed(base, cpu)
    noop, noop_mb = median_of_three(base)
    return {"dry": dry, "full": full, "noop": noop, "peak_mb": max(dry_mb, full_mb, noop_mb), "cpu": cpu["s"]}


def median_of_three(command):
    """(median seconds, highest peak MB) of three runs."""
    runs = sorted(timed(command) for _ in range(3))
    return runs[1][0], max(mb for _, mb in runs)


def project_config(dataset):
    config = [f"dataset={dataset}", "evaluation=none", "provider=gold"]
    if "apply_check:" in (PROJECT / "config.yaml").read_text():
        config.append("apply_check=false")  # the repositories are not fetched here
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[300, 2294])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--scheduler", default="greedy", help="the floor's scheduler (the project's is its profile's)")
    parser.add_argument("--project-only", action="store_true")
    parser.add_argument("--full-only", action="store_true", help="only the full run (no dry or no-op runs)")
    parser.add_argument("--snakemake-args", default="", help="more snakemake options for both workflows, e.g. "
                        "'--scheduler-subsample 0 --max-jobs-per-timespan 100/1s' (Snakemake's defaults)")
    args = parser.parse_args()
    extra = shlex.split(args.snakemake_args)
    print(f"{'rows':>5} {'workflow':<8} {'dry run':>8} {'full run':>9} {'no-op':>7} {'peak MB':>8} {'CPU':>7} "
          f"{'CPU/row':>8}")
    for count in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            dataset = Path(tmp) / "rows.jsonl"
            dataset.write_text("".join(json.dumps(r) + "\n" for r in dataset_rows(count)))
            results = {"project": measure(PROJECT / "Snakefile", Path(tmp) / "project", args.cores, extra,
                                          project_config(dataset), args.full_only)}
            predictions = (Path(tmp) / "project/results/gold/predictions.jsonl").read_text().count("\n")
            if predictions != count:
                sys.exit(f"the project wrote {predictions} predictions for {count} rows")
            if not args.project_only:
                # the floor has no profile: the project's default profile's scheduling settings, given here
                floor_flags = ["--scheduler", args.scheduler, "--keep-going", "--rerun-incomplete", "--resources",
                               "api=8", *FLOOR_PROFILE, *extra]
                results["floor"] = measure(PROJECT / "benchmarks/floor/Snakefile", Path(tmp) / "floor", args.cores,
                                           floor_flags, [f"dataset={dataset}"], args.full_only)
        for name, r in results.items():
            print(f"{count:>5} {name:<8} {r['dry']:>7.1f}s {r['full']:>8.1f}s {r['noop']:>6.1f}s {r['peak_mb']:>8.0f} "
                  f"{r['cpu']:>6.0f}s {1000 * r['cpu'] / count:>6.1f}ms")
        if "floor" in results:
            ratios = {k: results["project"][k] / results["floor"][k] for k in ("dry", "full", "noop", "peak_mb", "cpu")}
            print(f"{count:>5} {'ratio':<8} {ratios['dry']:>7.2f}x {ratios['full']:>8.2f}x {ratios['noop']:>6.2f}x "
                  f"{ratios['peak_mb']:>7.2f}x {ratios['cpu']:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
