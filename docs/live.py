"""The run's view, as a user sees it: 20 SWE-bench Lite instances against the loopback model
server of the tests at 2 s a request (the real openai client), with a refusal, a rate limit and a
server error that outlasts the attempts. Run it in a terminal to see the live view, or through a
pipe for the plain lines:

    .venv/bin/python docs/live.py [--latency 2] [--out /tmp/live]
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))
from fake_api import FakeModelServer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the server takes per request")
    parser.add_argument("--out", default="/tmp/live", help="the run's working folder (results/ under it)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (PROJECT.parent / "shared/data/swebench_lite_test.jsonl").open()][::15][:20]
    workdir = Path(args.out)
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = workdir / "lite20.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeModelServer(rows, latency=args.latency) as server:
        server.faults.update({rows[3]["instance_id"]: ["500"] * 3, rows[7]["instance_id"]: ["429"],
                              rows[11]["instance_id"]: ["refusal"]})
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
                   str(workdir), "--cores", "4", "--config", f"dataset={dataset}", "provider=openai",
                   f"base_url={server.url}/v1", "model=gpt-4o", "evaluation=none", "apply_check=false",
                   "max_attempts=3", "retry_backoff=0.5", "max_cost=1",
                   "context=none",  # the issue alone: the repositories are not reachable offline
                   "provider_prices=true"]  # the loopback server stands for OpenAI's API and its prices
        return subprocess.run(command, env=dict(os.environ, OPENAI_API_KEY="sk-demo")).returncode


if __name__ == "__main__":
    sys.exit(main())
