"""What a run does before any job, in the process the user started (rules/start.smk calls it once): the
checks of what its jobs will need, and what it does to its run folder. In order:

1. the evaluation backend's preflight (the daemon, a key, credentials, disk);
2. the check of the settings its paid answers were made with, and their record answer_settings.json;
3. a new run asks again after a quota ran out: quota_exhausted.json is renamed;
4. run.json, what the run's view (the logger plugin, `status --watch`) needs beside the instances' files;
5. with retry_failed, the recorded failures set aside, so that their stage is made again;
6. answers that a smaller output limit cut off before any text set aside, to be asked again with a larger one;
7. the cost estimate: of the new samples when there are more, as far as the prompts are built in a dry run,
   and a note when the model has no price;
8. with batch=true, a finished batch that left instances to ask is done again.
"""
import os
import sys

from scripts import settings
from scripts.common import read_json, write_json_atomic
from scripts.providers import ASK


class StartError(Exception):
    """What stops the run before any job; its text is the whole message."""


def before_jobs(config, environ, derived, runs_jobs, dry_run, estimate_path=None, estimate_settings=None,
                batch_done=None, context_why=None):
    """Everything above for the checked config and derived its settings (settings.derived). runs_jobs: snakemake
    was called to run jobs (settings.runs_jobs), possibly as a dry run; estimate_path and batch_done: the
    run's estimate.json and batch/done.json when it has them (rules/paths.smk); context_why: why the run has
    its context (settings.context_choice)."""
    starts = runs_jobs and not dry_run  # what writes to the run folder, or needs what only a run needs
    run_dir, model, repair = derived["run_dir"], derived["model"], derived["repair_attempts"] > 0
    index = f"{run_dir}/instances.index.json"
    asks_model = config["provider"] in ASK and not config["predictions"]
    if config["evaluation"] != "none" and starts:
        from scripts import evaluate

        try:
            evaluate.preflight(config, environ)
        except evaluate.PreflightError as e:
            raise StartError(f"Cannot evaluate: {e}") from None
    if not config["predictions"] and runs_jobs:
        record_answer_settings(config, environ, run_dir, starts)
    if starts:
        write_run_info(config, run_dir, repair, context_why)
    if config["retry_failed"] and starts and os.path.exists(index):
        from scripts.records import set_aside_failures

        for path in set_aside_failures(run_dir, list(read_json(index)), repair=repair):
            print(f"retry_failed: {path} set aside; its stage is made again.", file=sys.stderr)
    if asks_model and starts and os.path.exists(index):
        from scripts.providers import output_limit
        from scripts.records import set_aside_cut_off

        for path in set_aside_cut_off(run_dir, list(read_json(index)), output_limit(config["provider"], model,
                                                                                     derived["api"])):
            print(f"{path} was cut off by a smaller output limit: set aside, asked again.", file=sys.stderr)
    if estimate_path:
        estimate_before_jobs(run_dir, index, model, estimate_settings, estimate_path, starts, dry_run)
    elif asks_model and not config.get("agent"):  # an agent's steps are not known before it runs
        print(f"No cost estimate: no price is known for model {model}, so requests start as soon as their prompt is "
              "built and their cost is unknown; to have one, give the price with "
              f"--config 'prices={{{model}: {{input: X, output: Y}}}}' (USD per million tokens).", file=sys.stderr)
    if batch_done and starts and os.path.exists(batch_done) and read_json(batch_done)["unanswered"]:
        os.remove(batch_done)  # instances are left to ask: a new batch


def record_answer_settings(config, environ, run_dir, write):
    """Stop when the run folder holds paid answers made with other settings (unless overwrite=true); with write,
    record this run's in answer_settings.json, and rename the mark of a quota that ran out."""
    path = f"{run_dir}/answer_settings.json"
    answer_settings = settings.answer_settings(config, environ)
    if not config["overwrite"]:
        try:
            settings.check_answer_settings(read_json(path) if os.path.exists(path) else None, answer_settings, run_dir)
        except settings.ConfigError as e:
            raise StartError(f"Invalid configuration: {e}") from None
    if write and not (os.path.exists(path) and read_json(path) == answer_settings):
        write_json_atomic(path, answer_settings)
    if write and os.path.exists(f"{run_dir}/quota_exhausted.json"):
        # a new run asks again: the account may have credit now
        os.replace(f"{run_dir}/quota_exhausted.json", f"{run_dir}/quota_exhausted.earlier.json")


def write_run_info(config, run_dir, repair, context_why=None):
    """run.json: the stages of the run, its budget, its samples and its context (the strategy, and why)."""
    asks = not config["predictions"]
    agent = asks and bool(config.get("agent")) and config["provider"] in ASK
    stages = {"context": asks and not agent, "prompt": asks and not agent, "generate": asks and not agent,
              "agent": agent, "patch": asks, "repair": repair and asks, "evaluate": config["evaluation"] != "none"}
    write_json_atomic(f"{run_dir}/run.json", {"stages": [stage for stage, used in stages.items() if used],
                                              "max_cost": config.get("max_cost"), "samples": config["samples"],
                                              "context": {"strategy": config["context"],
                                                          "why": context_why or f"context={config['context']}"}})


def estimate_before_jobs(run_dir, index, model, estimate_settings, path, starts, dry_run):
    """The estimate of the new samples when there are more (made here: made by its rule, it would be an input
    updated by another job for every answer already in, which would be asked again); in a dry run, the
    estimate as far as the prompts are built."""
    from scripts import estimate

    samples = estimate_settings["samples"]
    if starts and os.path.exists(path) and read_json(path).get("samples", 1) != samples:
        try:
            estimate.run(run_dir, list(read_json(index)), model, estimate_settings, path)
        except estimate.CostAboveWarning as e:
            raise StartError(str(e)) from None
    if not dry_run:
        return
    if os.path.exists(index):
        record, missing = estimate.for_run(run_dir, list(read_json(index)), model, estimate_settings)
        print(estimate.describe(record)
              + (f" {len(missing)} instances have no prompt yet and are not counted." if missing else ""),
              file=sys.stderr)
    else:
        print("Cost estimate: made once the prompts are built, before any request (nothing is selected yet).",
              file=sys.stderr)
