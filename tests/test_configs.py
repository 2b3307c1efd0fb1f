"""Every configuration of tests/configs/ read by the real snakemake, offline, on real Lite rows: `--lint`
finds nothing, and dry runs with profiles/default and profiles/slurm plan every job of the run, the
selection being made first (a dry run plans no instance's job before it). profiles/slurm needs no
cluster for a dry run."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import LITE_TEST, PROJECT, read_rows, write_rows

pytestmark = pytest.mark.workflow

CONFIGS = sorted((PROJECT / "tests" / "configs").glob("*.yaml"))
SLURM = PROJECT / "profiles" / "slurm"
# The lint findings left. The shell rules (select, the merges, evaluate, summary, figures, compare) run
# `python -m scripts.<stage>` with the interpreter that runs snakemake (rules/common.smk); no conda
# environment or container is offered, as none can be built and tested here.
SOFTWARE = "Specify a conda environment or container for each rule."
# given_patch writes a patch's hash and has nothing to log; a change of its code would rerun it, and so
# evaluate again every instance of the runs made before.
GIVEN_PATCH_LOG = ("rule given_patch", "No log directive defined")
# The jobs each configuration's run has, once the selection is made.
JOBS = {
    "gold": {"pull_plan", "pull", "context", "prompt", "generate", "patch", "predictions", "evaluate", "evaluation", "summary", "figures"},
    "openai_repair": {"context", "prompt", "estimate", "generate", "patch", "repair", "predictions", "summary",
                      "figures"},
    "anthropic_batch": {"context", "prompt", "estimate", "batch", "generate", "patch", "repair", "predictions",
                        "summary", "figures"},
    "predictions": {"pull_plan", "pull", "validate", "given_patch", "predictions", "evaluate", "evaluation", "summary",
                    "figures"},
    "models": {"model1_context", "model1_prompt", "model2_prompt", "estimate", "compare"} | {
        f"model{k}_{rule}" for k in (1, 2) for rule in ("generate", "patch", "repair", "predictions", "summary",
                                                       "figures")},
    "samples": {"pull_plan", "pull", "context", "prompt", "generate", "patch", "repair", "predictions", "evaluate", "evaluation",
                "summary", "figures"},
    "agent": {"pull_plan", "pull", "agent", "patch", "predictions", "evaluate", "evaluation", "summary", "figures"},
}


def snakemake(workdir, config, *args):
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(config), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}
    env.update(OPENAI_API_KEY="sk-test-configs", ANTHROPIC_API_KEY="sk-ant-test-configs")
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)


def lints(text):
    """{(what, title)} of the findings of snakemake --lint (what: 'rule <name>' or 'snakefile <path>')."""
    found, what = set(), None
    for line in text.splitlines():
        if heading := re.match(r"Lints for (rule \S+|snakefile \S+)", line):
            what = heading.group(1)
        elif finding := re.match(r"    \* (.+):$", line):
            found.add((what, finding.group(1)))
    return found


def job_blocks(text):
    """[(rule, the lines of its job)] of a dry run's plan."""
    return re.findall(r"^[ \t]*(?:local)?(?:rule|checkpoint) (\S+):\n((?:[ \t]+(?!\[|rule )\S.*\n)*)", text, re.M)


def planned(text):
    """The rules of a dry run's jobs, from its job stats."""
    table = text.split("Job stats:")[1].split("total")[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}


@pytest.fixture
def workdir(tmp_path):
    rows = read_rows(LITE_TEST, 2)
    write_rows(tmp_path / "rows.jsonl", rows)
    write_rows(tmp_path / "predictions.jsonl", [{"instance_id": r["instance_id"], "model_name_or_path": "given",
                                                 "model_patch": r["patch"]} for r in rows])
    return tmp_path


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_a_configuration_lints_clean_and_plans_its_run_on_a_workstation_and_on_slurm(config, workdir):
    lint = snakemake(workdir, config, "--lint")
    found = lints(lint.stdout + lint.stderr)
    assert lint.returncode == (1 if found else 0), lint.stderr
    assert [f for f in found if f[1] != SOFTWARE and f != GIVEN_PATCH_LOG] == [], lint.stderr

    # the selection (every model's), made for real: no dry run plans the jobs of the instances before it
    rules = snakemake(workdir, config, "--list-rules")
    assert rules.returncode == 0, rules.stderr
    selects = [rule for rule in rules.stdout.split() if rule.endswith("select")]
    made = snakemake(workdir, config, "--cores", "1", "--until", *selects, "--config", "evaluation=none",
                     "validate_gold=false")
    assert made.returncode == 0, made.stderr

    texts = []
    for profile in ([], ["--workflow-profile", str(SLURM)]):
        dry = snakemake(workdir, config, "-n", *profile)
        assert dry.returncode == 0, dry.stderr
        texts.append(dry.stdout + dry.stderr)
        assert planned(texts[-1]) == JOBS[config.stem] | {"all"}, texts[-1]
    # On SLURM every job has a CPU (srun refuses --cpus-per-task=0), and the rule of each model of
    # several the profile's resources of its rule.
    blocks = job_blocks(texts[-1])
    assert {rule for rule, _ in blocks} == JOBS[config.stem] | {"all"}
    assert not [rule for rule, lines in blocks if "threads: 0" in lines]
    resources = yaml.safe_load(SLURM.joinpath("config.yaml").read_text())["set-resources"]
    for rule, lines in blocks:
        for name, value in resources.get(re.sub(r"^model\d+_", "", rule), {}).items():
            assert re.search(rf"\b{name}={value}\b", lines), (rule, lines)


def test_the_slurm_profile_names_rules_and_groups_the_workflow_has(workdir):
    profile = yaml.safe_load(SLURM.joinpath("config.yaml").read_text())
    rules, groups = set(), set()
    for config in CONFIGS:
        listed = snakemake(workdir, config, "--list-rules")
        assert listed.returncode == 0, listed.stderr
        rules |= set(listed.stdout.split())
    for path in (PROJECT / "rules").glob("*.smk"):
        groups |= set(re.findall(r"^\s+group:\n\s+\"(\w+)\"", path.read_text(), re.M))
    # the group of the image's pull, and the stages in its image, by the run's settings
    pull_group = re.search(r"^PULL_GROUP = (.*)$", (PROJECT / "rules" / "paths.smk").read_text(), re.M).group(1)
    groups |= set(re.findall(r"\"(\w+)\"", pull_group))
    assert set(profile["set-threads"]) | set(profile["set-resources"]) <= rules
    assert set(profile["group-components"]) == groups == {"prepare", "check", "evaluate", "agent"}
