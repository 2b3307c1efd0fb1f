# The input functions of the rules, and what a run does before any job.
import functools
import json
import os
import shlex
import sys


include: "config.smk"


from snakemake.settings.types import DeploymentMethod

from scripts.providers import ASK as MODEL_PROVIDERS  # the providers that ask a model (not gold or replay)
from scripts.common import infrastructure_fault, read_json, read_jsonl, sample_number
from scripts.costs import price_for
from scripts import snakemake_patches

# A model's module of a run of several models (rules/models.smk): its number, the run folder that makes the
# selection, contexts and prompts, and every model's ledger (max_cost holds across them).
SHARED = config.pop("shared", None)
config.update(checked_config(config, SHARED and SHARED["entry"]))

if config["evaluation"] != "none" and STARTS_RUN:
    from scripts import evaluate

    try:  # what the evaluation backend needs: the daemon, a key, credentials, disk
        evaluate.preflight(config, os.environ)
    except evaluate.PreflightError as e:
        sys.exit(f"Cannot evaluate: {e}")

# Snakemake's internals this workflow uses, all in scripts/snakemake_patches.py: only on the Snakemake
# version they were written for, and only with snakemake_patches on.
SNAKEMAKE_PATCHES = snakemake_patches.usable(config["snakemake_patches"], warn=workflow.is_main_process)

# What the rules take from the config, worked out once (scripts/settings.py).
DERIVED = settings.derived(config)
RUN = DERIVED["run_dir"]
MODEL = DERIVED["model"]
REPAIR_ATTEMPTS = DERIVED["repair_attempts"]  # 0: no repair stage
# The run folder that makes the selection, contexts and prompts: this one, or the first model's of several.
PREP = SHARED["prep_run"] if SHARED else RUN
if SHARED:
    DERIVED["api"]["shared_ledgers"] = SHARED["ledgers"]
# The prompt template: a new one is a new input of the prompts, and of the answers that rebuild a prompt.
TEMPLATE = config["prompt_template"] or f"{workflow.basedir}/scripts/templates/{config['prompt_style']}.yaml"
# The patch each instance's prediction takes: the repair stage's, when there is one.
PATCH = "repair.diff" if REPAIR_ATTEMPTS else "patch.diff"
# Answers per instance. Sample 1 is where a run of one sample keeps it; sample s (2..k) has the same files
# under instances/<id>/samples/<s>/ and its merged ones under samples/<s>/ (the {sample} wildcard: "" or
# "samples/<s>/"), so that a run with more samples asks only the new ones.
SAMPLES = config["samples"]
# Shell commands run `python -m scripts.<module>`: Snakemake's own interpreter, or under
# --sdm conda the environment envs/runner.yaml makes from requirements.txt (CONDA_ENV, rules/config.smk).
shell.prefix(
    "set -euo pipefail; "
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    + (
        ""
        if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
        else f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH; "
    )
)
INSTANCES = f"{RUN}/instances.jsonl"
INDEX = f"{RUN}/instances.index.json"
# The retrieval dataset (context=bm25_13K/27K/40K) and the files the select step takes from it.
RETRIEVAL = settings.retrieval_source(config)
RETRIEVAL_ROWS = f"{RUN}/retrieval.jsonl"
RETRIEVAL_INDEX = f"{RUN}/retrieval.index.json"
# The settings the run's answers were made with; a change that would replace paid answers stops the run here.
ANSWER_SETTINGS = f"{RUN}/answer_settings.json"


if not config["predictions"] and workflow.is_main_process and settings.runs_jobs(sys.argv[1:]):
    from scripts.common import write_json_atomic

    answer_settings = settings.answer_settings(config, os.environ)
    if not config["overwrite"]:
        try:
            settings.check_answer_settings(
                read_json(ANSWER_SETTINGS) if os.path.exists(ANSWER_SETTINGS) else None, answer_settings, RUN
            )
        except settings.ConfigError as e:
            sys.exit(f"Invalid configuration: {e}")
    if STARTS_RUN and not (os.path.exists(ANSWER_SETTINGS) and read_json(ANSWER_SETTINGS) == answer_settings):
        write_json_atomic(ANSWER_SETTINGS, answer_settings)
    if STARTS_RUN and os.path.exists(f"{RUN}/quota_exhausted.json"):
        # a new run asks again: the account may have credit now
        os.replace(f"{RUN}/quota_exhausted.json", f"{RUN}/quota_exhausted.earlier.json")


# What the run's view (the logger plugin, `status --watch`) needs beside the instances' files.
if STARTS_RUN:
    from scripts.common import write_json_atomic

    write_json_atomic(
        f"{RUN}/run.json",
        {
            "stages": [
                stage
                for stage, used in {
                    "context": not config["predictions"],
                    "prompt": not config["predictions"],
                    "generate": not config["predictions"],
                    "patch": not config["predictions"],
                    "repair": REPAIR_ATTEMPTS > 0 and not config["predictions"],
                    "evaluate": config["evaluation"] != "none",
                }.items()
                if used
            ],
            "max_cost": config.get("max_cost"),
            "samples": SAMPLES,
        },
    )


if config["retry_failed"] and STARTS_RUN and os.path.exists(INDEX):
    from scripts.status import set_aside_failures

    for path in set_aside_failures(RUN, list(read_json(INDEX)), repair=REPAIR_ATTEMPTS > 0):
        print(f"retry_failed: {path} set aside; its stage is made again.", file=sys.stderr)


# Answers that a smaller output limit cut off before any text are asked again with a larger one.
if config["provider"] in MODEL_PROVIDERS and not config["predictions"] and STARTS_RUN and os.path.exists(INDEX):
    from scripts.providers import output_limit
    from scripts.status import set_aside_cut_off

    for path in set_aside_cut_off(RUN, list(read_json(INDEX)), output_limit(config["provider"], MODEL, DERIVED["api"])):
        print(f"{path} was cut off by a smaller output limit: set aside, asked again.", file=sys.stderr)


wildcard_constraints:
    id=r"[^/]+",
    sample=r"(samples/([2-9]|[1-9][0-9]+)/)?",


def selected_ids():
    """The instance ids of the selection, known once the select checkpoint has run."""
    output = checkpoints.select.get().output
    if config["evaluation"] in ("docker", "modal"):
        check_evaluable(output.rows)
    return list(read_json(output.index))


@functools.cache
def check_evaluable(rows_path):
    """Stop before any instance's job when the harness has no specifications for some selected rows.
    Here rather than in the select job, so that a change of `evaluation` does not select again."""
    import logging

    from scripts.select import SelectionError
    from scripts.select import check_evaluable as check_rows

    # Importing the harness calls logging.basicConfig, which would print every log record of
    # Snakemake's process a second time: the root logger is put back as it was.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        check_rows(read_jsonl(rows_path))
    except SelectionError as e:
        raise WorkflowError(f"Cannot evaluate: {e}")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def merged_ids(sample=""):
    """The instances the merged files of a sample (predictions, evaluation, summary) hold: all selected
    ones, or with allow_partial those whose patch is made, leaving out the ones that failed transiently."""
    if not config["allow_partial"] or config["predictions"]:
        return selected_ids()
    return [i for i in selected_ids() if os.path.exists(f"{RUN}/instances/{i}/{sample}patch.json")]


def per_instance(filename, ids=selected_ids):
    def inputs(wildcards):
        return [f"{RUN}/instances/{i}/{filename}" for i in ids()]

    return inputs


def merged(filename, sample=None):
    """The file of each instance that the merged files of a sample hold (by default the {sample} of the job)."""

    def inputs(wildcards):
        folder = wildcards.get("sample", "") if sample is None else sample
        return [f"{RUN}/instances/{i}/{folder}{filename}" for i in merged_ids(folder)]

    return inputs


def merged_reports(wildcards, sample=None):
    """Every merged instance's evaluation of a sample. With allow_partial, not those of instances whose last
    evaluation failed on a fault of the machinery (its log ends with the cause): they are left
    out, like an instance whose generation failed, until a plain run retries them."""
    folder = wildcards.get("sample", "") if sample is None else sample
    ids = [
        i
        for i in merged_ids(folder)
        if not config["allow_partial"]
        or os.path.exists(f"{RUN}/instances/{i}/{folder}evaluation.json")
        or not infrastructure_fault(f"{RUN}/logs/{i}/{folder}evaluate.log")
    ]
    return [f"{RUN}/instances/{i}/{folder}evaluation.json" for i in ids]


INSTANCE_FILES = ["context.json", "prompt.json", "response.json", "patch.diff", "patch.json"]
INSTANCE_FILES += ["repair.diff", "repair.json"] if REPAIR_ATTEMPTS else []


def run_targets(wildcards):
    """Every file of the run. The per-instance files are requested by name because
    Snakemake does not remake a deleted intermediate file whose downstream files are
    up to date; requested, a deleted one is remade and what follows it is redone."""
    targets = [f"{RUN}/summary.json", f"{RUN}/summary.md"]
    targets += FIGURES  # rules/figures.smk
    if not config["predictions"]:
        targets += [path for name in INSTANCE_FILES for path in merged(name)(wildcards)]
    if config["evaluation"] != "none":
        targets += merged_reports(wildcards) + [f"{RUN}/evaluation.json"]  # rules/evaluate.smk
        if config["predictions"]:
            targets += merged("given_patch.sha256")(wildcards)
    for sample in (f"samples/{s}/" for s in range(2, SAMPLES + 1)):  # each sample's own files and merges
        targets += [path for name in INSTANCE_FILES[2:] for path in merged(name, sample)(wildcards)]
        targets.append(f"{RUN}/{sample}predictions.jsonl")
        if config["evaluation"] != "none":
            targets += merged_reports(wildcards, sample) + [f"{RUN}/{sample}evaluation.json"]
    return targets


def failure_advice():
    """What the user reads when jobs failed: the errors above name the rule, the instance and its log."""
    from scripts.costs import budget_advice, quota_advice

    return (
        quota_advice(RUN)
        + budget_advice(RUN, config.get("max_cost"))
        + (
            f"Some jobs of run {RUN} failed; the errors above name each one's instance and log file, and all finished "
            "work is kept. To retry just what failed, run the same command again. To merge and evaluate what is done "
            "now, add --config allow_partial=true. To see the state of every instance: "
            f"{sys.executable} -m scripts.status --run {RUN}"
        )
    )


def selection_inputs():
    """The selection as the per-instance jobs read it. ancient(): selecting more instances
    rewrites these files, which must not redo the instances that are already done."""
    return {"instances": ancient(INSTANCES), "index": ancient(INDEX)}


# The cost estimate, which every request waits for. Only for a model with a price: for one without (a
# local server) it could stop nothing, and requests start while other prompts are still being built.
ESTIMATE = (
    f"{RUN}/estimate.json"
    if config["provider"] in MODEL_PROVIDERS
    and not config["predictions"]
    and price_for(
        config["provider"], MODEL, DERIVED["api"]["prices"], config["batch"], DERIVED["api"]["database_prices"]
    )
    is not None
    else None
)


def estimate_settings():
    return {
        "provider": config["provider"],
        "batch": config["batch"],
        "prices": DERIVED["api"]["prices"],
        "database_prices": DERIVED["api"]["database_prices"],
        "prompt_cache": DERIVED["api"]["prompt_cache"],
        "answer_tokens": config["estimate_answer_tokens"],
        "max_output_tokens": config["max_output_tokens"],
        "cost_warn": config["cost_warn"],
        "confirm_cost": config["confirm_cost"],
        "samples": SAMPLES,
    }


def instance_ids(paths):
    """The instance ids of per-instance files (results/<run>/instances/<id>/<file>)."""
    return [os.path.basename(os.path.dirname(path)) for path in paths]


def context_settings():
    """What a context job reads from the config besides its params (where repositories come from)."""
    return {
        "context_tokens": config["context_tokens"],
        "tokenizer": config["tokenizer"],
        "repo_cache": config["repo_cache"],
        "repo_url": config["repo_url"],
    }


def request_settings(sample):
    """The settings of a sample's requests ({sample}: "" or samples/<s>/)."""
    return dict(DERIVED["api"], sample=sample_number(sample))


def repair_settings(sample):
    return {
        "provider": config["provider"],
        "model": MODEL,
        "attempts": REPAIR_ATTEMPTS,
        "settings": request_settings(sample),
        "repos": DERIVED["repos"],
    }
