"""The documentation's commands work and name what exists: every shell block of README.md and docs/*.md
is run here (offline, in a copy of the project) and its result checked, or is marked
`<!-- not run: why -->` on the line before it; every `--config KEY`, configuration table row and
project file path the pages name exists."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT

pytestmark = pytest.mark.workflow

PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!-- not run: .+ -->$")
SHELL = {"bash", "sh", "shell", "console"}
OFFLINE = ".venv/bin/snakemake --cores 2 --config dataset=examples/tiny.jsonl evaluation=none repo_url='examples/repos/{repo}.bundle'"
GIVEN = (".venv/bin/snakemake --cores 2 --config dataset=examples/tiny.jsonl predictions=results/gold/predictions.jsonl "
         "run_id=given evaluation=none")
REPLAY = (".venv/bin/snakemake --cores 2 --config dataset=examples/tiny.jsonl evaluation=none apply_check=false "
          "provider=replay replay_file=results/gold/predictions.jsonl run_id=replay")
RERUN = OFFLINE + " retry_failed=true"
STATUS = ".venv/bin/python -m scripts.status --run results/gold"
STATUS_ALL = ".venv/bin/python -m scripts.status"
COMPARE = ".venv/bin/python -m scripts.compare results/gold results/replay"
REPORT = (".venv/bin/snakemake --config dataset=examples/tiny.jsonl evaluation=none repo_url='examples/repos/{repo}.bundle' "
          "--report report.html")
LIVE = ".venv/bin/python docs/live.py --latency 0.5 --out /tmp/live"
# Run by .ci/run (which sets up from scratch), not here: test_ci_runs_the_readme_commands checks that it does.
SETUP = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
TEST = ".venv/bin/python -m pytest"


def shell_blocks():
    """(page, line, commands, marked) of each fenced shell block; commands with their continuation lines
    joined. A fence without a language whose first line runs something counts as shell too."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("```"):
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            body = lines[i + 1:end]
            lang = lines[i][3:].strip()
            if lang in SHELL or (not lang and body and re.match(r"(\.venv/|python|snakemake|sudo |export )", body[0])):
                text = "\n".join(body).replace("\\\n", " ")
                commands = [" ".join(c.split()) for c in text.splitlines() if c.strip() and not c.startswith("#")]
                marked = i > 0 and bool(NOT_RUN.match(lines[i - 1].strip()))
                found.append((page.relative_to(PROJECT), i + 1, commands, marked))
            i = end + 1
    return found


def check_offline(result, ws):
    run = ws / "results" / "gold"
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (ws / "examples" / "tiny.jsonl").read_text().splitlines()]
    assert sorted(p["instance_id"] for p in predictions) == sorted(r["instance_id"] for r in rows)
    # The gold provider's patch, checked against the bundled repositories, is the reference patch.
    assert all(p["model_patch"].strip() for p in predictions)
    assert "3 instances" in (run / "summary.md").read_text() or '"selected": 3' in (run / "summary.json").read_text()


def check_given(result, ws):
    given = [json.loads(line) for line in (ws / "results/given/predictions.jsonl").read_text().splitlines()]
    gold = [json.loads(line) for line in (ws / "results/gold/predictions.jsonl").read_text().splitlines()]
    assert {p["instance_id"]: p["model_patch"] for p in given} == {p["instance_id"]: p["model_patch"] for p in gold}
    assert not (ws / "results/given/instances").exists()  # nothing generated


def check_replay(result, ws):
    verdicts = [json.loads(p.read_text())["status"] for p in sorted((ws / "results/replay/instances").glob("*/patch.json"))]
    assert verdicts == ["valid"] * 3


def check_rerun(result, ws):
    assert "Nothing to be done" in result.stdout + result.stderr


def check_status(result, ws):
    assert "results/gold: 3 instances selected" in result.stdout
    assert re.search(r"^patch\s+3\s+0\s+0", result.stdout, re.M), result.stdout


def check_status_all(result, ws):
    for run in ("gold", "given", "replay"):
        assert f"results/{run}:" in result.stdout, result.stdout


def check_compare(result, ws):
    report = json.loads((ws / "results/compare/gold-vs-replay/compare.json").read_text())
    assert "gold" in json.dumps(report) and "replay" in json.dumps(report)
    text = (ws / "results/compare/gold-vs-replay/compare.md").read_text()
    assert text.count("100.0% (3/3)") == 2, text


def check_report(result, ws):
    html = (ws / "report.html").read_text(errors="replace")
    assert "<html" in html.lower() and "funnel" in html.lower()


def check_live(result, ws):
    # One instance's server error outlasts the attempts on purpose: the run ends non-zero, the rest done.
    assert result.returncode == 1, result.stdout + result.stderr
    run = ws / "live" / "results" / "openai-gpt-4o"
    answered = list(run.glob("instances/*/response.json"))
    assert len(answered) == 19
    failed = [log for log in run.glob("logs/*/generate.log")
              if "infrastructure fault: provider_unreachable" in log.read_text().strip().splitlines()[-1]]
    assert len(failed) == 1


# Each runnable command, what it needs run before it, and the check of its result, in run order.
CHECKS = {
    OFFLINE: ([], check_offline),
    GIVEN: ([OFFLINE], check_given),
    REPLAY: ([OFFLINE], check_replay),
    RERUN: ([OFFLINE], check_rerun),
    STATUS: ([OFFLINE], check_status),
    STATUS_ALL: ([OFFLINE, GIVEN, REPLAY], check_status_all),
    COMPARE: ([OFFLINE, REPLAY], check_compare),
    REPORT: ([OFFLINE], check_report),
    LIVE: ([], check_live),
}
FAILS_ON_PURPOSE = {LIVE}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A copy of what the commands need, with ../shared beside it as beside the project; the commands
    run there once each, their results kept for the commands that follow them."""
    root = tmp_path_factory.mktemp("docs")
    ws = root / "project"
    ws.mkdir()
    for name in ("Snakefile", "config.yaml", "rules", "scripts", "schemas", "profiles", "examples", "report", "docs",
                 "tests"):
        source = PROJECT / name
        (shutil.copytree(source, ws / name, ignore=shutil.ignore_patterns("__pycache__")) if source.is_dir()
         else shutil.copy(source, ws / name))
    (root / "shared").symlink_to(PROJECT.parent / "shared")
    return ws, {}


def run(workspace, command):
    ws, done = workspace
    if command not in done:
        for before in CHECKS[command][0]:
            run(workspace, before)
        python = shlex.quote(sys.executable)
        stand_in = {".venv/bin/snakemake": f"{python} -m snakemake", ".venv/bin/python": python,
                    "/tmp/live": shlex.quote(str(ws / "live"))}
        line = re.sub("|".join(map(re.escape, stand_in)), lambda m: stand_in[m.group()], command)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SWEBENCH_", "OPENAI_", "ANTHROPIC_", "MODAL_"))}
        env["HF_HUB_OFFLINE"] = "1"
        result = subprocess.run(["bash", "-c", line], cwd=ws, capture_output=True, text=True, env=env)
        if command not in FAILS_ON_PURPOSE:
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        done[command] = result
    return done[command]


@pytest.mark.parametrize("command", list(CHECKS), ids=[check.__name__ for _, check in CHECKS.values()])
def test_command(workspace, command):
    CHECKS[command][1](run(workspace, command), workspace[0])


def test_every_shell_block_is_run_or_marked():
    blocks = shell_blocks()
    unchecked = [f"{page}:{line}: {c}" for page, line, commands, marked in blocks if not marked
                 for c in commands if c not in CHECKS and c not in (SETUP, TEST)]
    assert not unchecked, ("shell blocks that are neither run by tests/test_docs.py nor marked "
                           "'<!-- not run: why -->' on the line before:\n" + "\n".join(unchecked))
    shown = {c for _, _, commands, marked in blocks if not marked for c in commands}
    assert not set(CHECKS) - shown, f"commands checked here that no page shows: {set(CHECKS) - shown}"


def test_ci_runs_the_readme_commands():
    readme = [c for page, _, commands, _ in shell_blocks() if page == Path("README.md") for c in commands]
    assert readme[:3] == [SETUP, OFFLINE, TEST]
    ci = (PROJECT / ".ci" / "run").read_text().splitlines()
    assert "python3 -m venv .venv" in ci and TEST in ci
    assert any(line.startswith(".venv/bin/pip install") and line.endswith("-r requirements.txt") for line in ci)
    assert any(line.startswith(".venv/bin/mkdocs build --strict") for line in ci)


def test_shell_blocks_are_found():
    # The offline run of the README, a marked block, and the fence without a language of the status view.
    blocks = shell_blocks()
    assert (Path("README.md"), 25, [OFFLINE], False) in blocks
    assert any(marked for *_, marked in blocks)


def config_keys_named():
    """(page, key) of each --config KEY=... in the pages, in shell blocks and in prose."""
    named = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            for part in line.split("--config")[1:]:
                try:
                    words = shlex.split(part.split("`")[0])
                except ValueError:
                    words = part.split()
                for word in words:
                    if word.startswith("-") or "=" not in word:
                        break
                    key = word.split("=")[0].strip("'\"")
                    if key != "key":  # the general form, `--config key=value`
                        named.append((page.name, key))
    return named


def test_config_keys_exist():
    schema = yaml.safe_load((PROJECT / "schemas" / "config.schema.yaml").read_text())["properties"]
    named = config_keys_named()
    assert {"dataset", "evaluation", "retry_failed", "confirm_cost", "models"} <= {key for _, key in named}
    # The configuration page's table: one row per key (or keys), each in the schema.
    table = re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", (PROJECT / "docs" / "configuration.md").read_text(), re.M)
    named += [("configuration.md", key) for row in table for key in re.findall(r"`(\w+)`", row)]
    unknown = sorted({f"{page}: {key}" for page, key in named if key not in schema})
    assert not unknown, f"settings the docs name that schemas/config.schema.yaml does not have: {unknown}"
    documented = {key for page, key in named if page == "configuration.md"}
    assert not set(schema) - documented, f"settings without a row in docs/configuration.md: {set(schema) - documented}"


PATH = re.compile(r"(?:\.\./shared/data/|\.ci/|benchmarks/|docs/|examples/|logger/|profiles/|report/|rules/|schemas/"
                  r"|scripts/|tests/)[\w./-]*|(?:Snakefile|config\.yaml|requirements\.txt|mkdocs\.yml|pyproject\.toml)")


def test_named_files_exist():
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        spans = re.findall(r"`([^`\n]+)`", text) + [w for _, _, cs, _ in shell_blocks() for c in cs for w in c.split()]
        for span in spans:
            for path in PATH.findall(span):
                if PATH.fullmatch(span) and not (PROJECT / path.rstrip(".")).exists():
                    missing.append(f"{page.name}: {path}")
        missing += [f"{page.name}: scripts/{m}.py" for m in re.findall(r"-m scripts\.(\w+)", text)
                    if not (PROJECT / "scripts" / f"{m}.py").exists()]
    assert not missing, f"files the docs name that the project does not have: {sorted(set(missing))}"
