"""Agent runs through the project against mini-swe-agent's own batch runner: the same scripted agent (the tests'
loopback server, tests/agent_server.py), the same real instance image (psf__requests-863, tests/real_instances.py)
and the same number of workers.

- the project: `snakemake agent=swebench samples=N --resources docker=W`, N trajectories of the instance;
- mini-swe-agent: its batch runner's process_instance on N copies of the row, W threads (its `--workers`), its
  LitellmModel pointed at the server (litellm offline).

Prints the wall time of each, the time per step (wall time over the steps of all trajectories, times the
workers), the time to start and remove one container, and the peak memory of each process.

    .venv/bin/python benchmarks/agent.py [--trajectories 8] [--workers 4]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests")]  # run as a plain script, scripts/ is not on the path otherwise

import docker  # noqa: E402
import real_instances  # noqa: E402
from agent_server import AgentServer, apply_command, submit_steps  # noqa: E402

from conftest import LITE_TEST, read_rows, write_rows  # noqa: E402

INSTANCE = "psf__requests-863"
IMAGE = "docker.io/swebench/sweb.eval.x86_64.psf_1776_requests-863:latest"
MINI = """
import concurrent.futures, json, resource, sys
from pathlib import Path
from minisweagent.config import get_config_from_spec
from minisweagent.run.benchmarks.swebench import DEFAULT_CONFIG_FILE, process_instance
from minisweagent.run.benchmarks.utils.batch_progress import RunBatchProgressManager
from minisweagent.utils.serialize import recursive_merge

rows, url, out, workers = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
config = recursive_merge(get_config_from_spec(DEFAULT_CONFIG_FILE), {"model": {
    "model_name": "openai/m", "model_kwargs": {"api_base": url, "api_key": "sk-mini"}}})
progress = RunBatchProgressManager(len(rows), out / "exit_statuses.yaml")
with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    list(pool.map(lambda row: process_instance(row, out, config, progress), rows))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def container_start_s(repeat=5):
    """Seconds to start the instance's container and remove it again, as the agent stage does (median)."""
    times = []
    for number in range(repeat):
        name = f"swebench-runner-benchmark-{number}"
        started = time.monotonic()
        subprocess.run(["docker", "run", "-d", "--name", name, "-w", "/testbed", "--rm", IMAGE, "sleep", "2h"],
                       check=True, capture_output=True)
        subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
        times.append(time.monotonic() - started)
    return sorted(times)[len(times) // 2]


def project(folder, server, row, trajectories, workers):
    dataset = write_rows(folder / "rows.jsonl", [row])
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
               str(folder), "--cores", str(workers), "--resources", f"docker={workers}", f"api={workers}",
               "--logger-swebench-jobs", "--config", f"dataset={dataset}", "provider=openai", "model=m",
               f"base_url={server.url}/v1", "agent=swebench", f"samples={trajectories}", "evaluation=none",
               "apply_check=false", "prices={m: {input: 1.0, output: 2.0}}"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}, "OPENAI_API_KEY": "sk-project"}
    started = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def mini(folder, server, row, trajectories, workers):
    rows = [dict(row, instance_id=f"{INSTANCE}-{n}", image_name=IMAGE) for n in range(trajectories)]
    env = {**os.environ, "HOME": str(folder), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "MSWEA_COST_TRACKING": "ignore_errors", "MSWEA_SILENT_STARTUP": "1",
           "MSWEA_GLOBAL_CONFIG_DIR": str(folder / "mswea")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", MINI, json.dumps(rows), f"{server.url}/v1", str(folder),
                             str(workers)], env=env, check=True, capture_output=True, text=True)
    return time.monotonic() - started, int(result.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    row = next(r for r in read_rows(LITE_TEST) if r["instance_id"] == INSTANCE)
    with tempfile.TemporaryDirectory() as tmp:
        real_instances.ensure_instances(docker.from_env(timeout=3600), [row], Path(tmp) / "mirrors")
        steps = submit_steps(apply_command(row["patch"]),
                             "python -m pytest tests/test_requests.py -x -q -k hook 2>&1 | tail -3", ["requests/models.py"])
        with AgentServer({INSTANCE: steps}, [row]) as server:
            (Path(tmp) / "project").mkdir()
            project_s = project(Path(tmp) / "project", server, row, args.trajectories, args.workers)
            project_steps = len(server.requests)
            project_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            server.requests.clear()
            (Path(tmp) / "mini").mkdir()
            mini_s, mini_rss = mini(Path(tmp) / "mini", server, row, args.trajectories, args.workers)
            mini_steps = len(server.requests)
    start = container_start_s()
    print(f"{args.trajectories} trajectories of {INSTANCE}, {args.workers} workers")
    for name, wall, steps, rss in (("project (snakemake)", project_s, project_steps, project_rss),
                                   ("mini-swe-agent batch runner", mini_s, mini_steps, mini_rss)):
        print(f"{name:<30} {wall:7.1f} s wall, {steps} steps, {wall * args.workers / steps:5.2f} s per step and "
              f"worker, peak memory {rss / 1024:.0f} MB")
    print(f"container start and removal: {start:.2f} s (median of 5)")


if __name__ == "__main__":
    main()
