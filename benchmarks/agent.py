"""Agent runs through the project against mini-swe-agent's own batch runner: the same scripted agent (the tests'
loopback server, tests/agent_server.py), the same real instance images (the psf/requests and pallets/flask Lite
instances that tests/real_instances.py builds) and the same number of workers.

- the project: `snakemake agent=swebench samples=K --resources docker=W` on I instances, I x K trajectories;
- mini-swe-agent: its batch runner's process_instance on the same I x K rows (each instance K times), W threads (its
  `--workers`), its LitellmModel pointed at the server (litellm offline).

Each trajectory is five steps (look around, apply the instance's gold patch, `git diff --stat`, write patch.txt,
submit). Prints the wall time of each; the time per step and worker (wall time x workers over the steps); for the
project, the part of it spent outside the agent jobs (snakemake: scheduling, its other jobs); the time to start and
remove an instance's container and to take the working tree's diff (what the project saves after each step for
resuming), medians over the instances; and the peak memory of each process, per running agent.

    .venv/bin/python benchmarks/agent.py [--instances 5] [--samples 4] [--workers 2]
"""
import argparse
import json
import os
import resource
import statistics
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

INSTANCES = ["psf__requests-863", "psf__requests-1963", "psf__requests-2317", "pallets__flask-4045",
             "pallets__flask-4992", "psf__requests-2148", "psf__requests-2674", "psf__requests-3362",
             "pallets__flask-5063"]
MINI = """
import concurrent.futures, json, resource, sys
from pathlib import Path
from minisweagent.config import get_config_from_spec
from minisweagent.run.benchmarks.swebench import DEFAULT_CONFIG_FILE, process_instance
from minisweagent.run.benchmarks.utils.batch_progress import RunBatchProgressManager
from minisweagent.utils.serialize import recursive_merge

rows, url, out, workers = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
config = recursive_merge(get_config_from_spec(DEFAULT_CONFIG_FILE), {"model": {
    "model_name": "openai/m", "model_kwargs": {"api_base": url, "api_key": "sk-mini"}}})
progress = RunBatchProgressManager(len(rows), out / "exit_statuses.yaml")
with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    list(pool.map(lambda row: process_instance(row, out, config, progress), rows))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def image(row):
    return f"docker.io/swebench/sweb.eval.x86_64.{row['instance_id'].replace('__', '_1776_')}:latest"


def steps_of(row):
    files = sorted({line.split(" b/")[-1] for line in row["patch"].splitlines() if line.startswith("diff --git")})
    return submit_steps(apply_command(row["patch"]), "git diff --stat", files)


def container_times(rows):
    """Median seconds to start an instance's container and remove it, and to take the working tree's diff in it
    as the agent stage does after each step (scripts/agent.py Container.diff)."""
    from scripts.agent import Container

    starts, diffs = [], []
    for number, row in enumerate(rows):
        started = time.monotonic()
        env = Container(f"swebench-runner-benchmark-{number}", image=image(row), cwd="/testbed", timeout=60)
        start = time.monotonic() - started
        untracked = env.untracked()
        env.apply(row["patch"])
        for _ in range(3):
            timed = time.monotonic()
            env.diff("HEAD", untracked)
            diffs.append(time.monotonic() - timed)
        timed = time.monotonic()
        env.cleanup()
        starts.append(start + time.monotonic() - timed)
    return statistics.median(starts), statistics.median(diffs)


def project(folder, server, rows, samples, workers):
    """(wall s, the agent jobs' own seconds summed) of one snakemake run."""
    dataset = write_rows(folder / "rows.jsonl", rows)
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
               str(folder), "--cores", str(workers), "--resources", f"docker={workers}", f"api={workers}",
               "--logger-swebench-jobs", "--config", f"dataset={dataset}", "provider=openai", "model=m",
               f"base_url={server.url}/v1", "agent=swebench", f"samples={samples}", "evaluation=none",
               "apply_check=false", "prices={m: {input: 1.0, output: 2.0}}"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}, "OPENAI_API_KEY": "sk-project"}
    started = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.monotonic() - started
    jobs = sum(json.loads(path.read_text())["latency_s"] for path in folder.glob("results/*/instances/**/response.json"))
    return wall, jobs


def mini(folder, server, rows, samples, workers):
    copies = [dict(row, instance_id=f"{row['instance_id']}-{n}", image_name=image(row)) for row in rows
              for n in range(samples)]
    env = {**os.environ, "HOME": str(folder), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "MSWEA_COST_TRACKING": "ignore_errors", "MSWEA_SILENT_STARTUP": "1",
           "MSWEA_GLOBAL_CONFIG_DIR": str(folder / "mswea")}
    started = time.monotonic()
    (folder / "rows.json").write_text(json.dumps(copies))
    result = subprocess.run([sys.executable, "-c", MINI, str(folder / "rows.json"), f"{server.url}/v1", str(folder),
                             str(workers)], env=env, check=True, capture_output=True, text=True)
    return time.monotonic() - started, int(result.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    wanted = INSTANCES[:args.instances]
    rows = [r for r in read_rows(LITE_TEST) if r["instance_id"] in wanted]
    trajectories = len(rows) * args.samples
    with tempfile.TemporaryDirectory() as tmp:
        real_instances.ensure_instances(docker.from_env(timeout=3600), rows, Path(tmp) / "mirrors")
        with AgentServer({row["instance_id"]: steps_of(row) for row in rows}, rows) as server:
            (Path(tmp) / "project").mkdir()
            project_s, jobs_s = project(Path(tmp) / "project", server, rows, args.samples, args.workers)
            project_steps = len(server.requests)
            project_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            server.requests.clear()
            (Path(tmp) / "mini").mkdir()
            mini_s, mini_rss = mini(Path(tmp) / "mini", server, rows, args.samples, args.workers)
            mini_steps = len(server.requests)
    start_s, diff_s = container_times(rows)
    print(f"{trajectories} trajectories ({len(rows)} instances x {args.samples} samples), {args.workers} workers")
    for name, wall, steps, rss in (("project (snakemake)", project_s, project_steps, project_rss),
                                   ("mini-swe-agent batch runner", mini_s, mini_steps, mini_rss)):
        print(f"{name:<30} {wall:7.1f} s wall, {steps} steps, {wall * args.workers / steps:5.2f} s per step and "
              f"worker, peak memory {rss / 1024:.0f} MB ({rss / 1024 / args.workers:.0f} MB per running agent)")
    print(f"project: outside the agent jobs {(project_s * args.workers - jobs_s) / project_steps:.2f} s per step and "
          f"worker; inside them {jobs_s / project_steps:.2f} s per step")
    print(f"container start and removal: {start_s:.2f} s; working tree diff: {diff_s:.3f} s (medians)")


if __name__ == "__main__":
    main()
