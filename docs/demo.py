"""What a user sees: a 20-instance run of real SWE-bench Lite rows against the loopback model
server of the tests (the real openai client, faults injected), then the status command, the
run with allow_partial, and the pictures of docs/ remade from that run.

    .venv/bin/python docs/demo.py [--out docs]

Faults: two rate limits (retried), one server error that outlasts the attempts (a transient
failure: no target), one refusal and one answer with no diff (permanent outcomes), and one
answer cut off at max_tokens in the middle of a hunk (its patch does not parse, and
self-repair's second request gets a whole one).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))
from fake_api import FakeModelServer  # noqa: E402


def show(title, command, cwd, env):
    """Run a command and print what the user sees; of Snakemake's output, the job blocks are left out
    (they name each job's files; error blocks are kept)."""
    print(f"\n$ {title}")
    result = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    in_block, lines = False, []
    for line in result.stdout.splitlines():
        # a job block (or the banner) is its head line and the indented lines under it
        if line.startswith(("rule ", "localrule ", "checkpoint ", "localcheckpoint ", "SNAKEMAKE")):
            in_block = True
            continue
        if in_block and (line.startswith((" ", "=")) or not line.strip()):
            continue
        in_block = False
        noise = line.startswith(("[", "Select jobs", "Execute ", "Finished jobid", "Using ", "Config file",
                                 "Assuming", "Building DAG", "Updating checkpoint", "Complete log"))
        if not (noise or (not line.strip() and (not lines or not lines[-1].strip()))):
            lines.append(line)
    print("\n".join(lines))
    print(f"[exit status {result.returncode}]")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(PROJECT / "docs"), help="where to write the pictures")
    args = parser.parse_args()
    # every 15th row: instances of most of Lite's repositories
    rows = [json.loads(line) for line in (PROJECT.parent / "shared/data/swebench_lite_test.jsonl").open()][::15]
    answers = {rows[5]["instance_id"]: ["I looked at the code and I think the bug is in the parser."]}
    faults = {rows[1]["instance_id"]: ["429"], rows[7]["instance_id"]: ["429", "429"],
              rows[3]["instance_id"]: ["500"] * 3, rows[11]["instance_id"]: ["refusal"],
              rows[17]["instance_id"]: ["truncated"]}
    with tempfile.TemporaryDirectory() as workdir, FakeModelServer(rows, latency=0.3) as server:
        server.faults.update(faults)
        server.answers.update(answers)
        server.retry_after = "1"
        dataset = Path(workdir) / "lite20.jsonl"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        env = dict(os.environ, OPENAI_API_KEY="sk-demo")
        snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--cores", "4",
                     "--config", f"dataset={dataset}", "provider=openai", f"base_url={server.url}/v1",
                     "model=gpt-4o", "evaluation=none", "apply_check=false", "max_attempts=3",
                     "retry_backoff=0.2", "max_cost=1", "context=none",  # the repositories are not reachable here
                     "provider_prices=true"]  # the loopback server stands for OpenAI's API and its prices
        show("snakemake --cores 4 --config provider=openai model=gpt-4o ... max_cost=1", snakemake, workdir, env)
        show("python -m scripts.status", [sys.executable, "-m", "scripts.status", "--results",
                                          f"{workdir}/results"], PROJECT, env)
        show("snakemake --cores 4 --config ... allow_partial=true", snakemake + ["allow_partial=true"], workdir, env)
        summary = Path(workdir) / "results/openai-gpt-4o/summary.json"
        print("\n$ sed -n '/## Missing/,$p' results/openai-gpt-4o/summary.md")
        text = summary.with_suffix(".md").read_text()
        print(text[text.find("## Missing"):] if "## Missing" in text else "(no missing instances)")
        subprocess.run([sys.executable, "-m", "scripts.figures", "--summary", str(summary), "--out-dir", args.out],
                       cwd=PROJECT, check=True)
        print(f"\npictures written to {args.out}")


if __name__ == "__main__":
    main()
