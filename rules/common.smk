# Configuration, checked before any job runs, and the input functions of the rules.
import json
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))

from scripts import settings
from scripts.common import read_json


def checked_config(config):
    """The config with environment settings and defaults applied; a bad one ends the
    run here, before any job, with one message."""
    config = settings.layer_environment(config, workflow.config_settings.overwrite_config, os.environ)
    try:
        validate(config, "../schemas/config.schema.yaml")
        settings.check(config)
        if not workflow.output_settings.dryrun:  # a dry run sends no request
            settings.check_api_key(config, os.environ)
    except WorkflowError as e:
        sys.exit(f"Invalid configuration: {settings.describe_schema_error(e)}")
    except settings.ConfigError as e:
        sys.exit(f"Invalid configuration: {e}")
    return config


config.update(checked_config(config))

if config["evaluation"] != "none" and not workflow.output_settings.dryrun:
    from scripts import evaluate

    try:  # what the evaluation backend needs: the daemon, a key, credentials, disk
        evaluate.preflight(config, os.environ)
    except evaluate.PreflightError as e:
        sys.exit(f"Cannot evaluate: {e}")

RUN = f"results/{settings.run_id(config)}"
MODEL = settings.model_name(config) if not config["predictions"] else None
PYTHON = f"{sys.executable} -m scripts"
INSTANCES = f"{RUN}/instances.jsonl"
INDEX = f"{RUN}/instances.index.json"
# The retrieval dataset (context=bm25_13K/27K/40K) and the files the select step takes from it.
RETRIEVAL = settings.retrieval_source(config)
RETRIEVAL_ROWS = f"{RUN}/retrieval.jsonl"
RETRIEVAL_INDEX = f"{RUN}/retrieval.index.json"


wildcard_constraints:
    id=r"[^/]+",


def selected_ids():
    """The instance ids of the selection, known once the select checkpoint has run."""
    return list(read_json(checkpoints.select.get().output.index))


def per_instance(filename):
    def inputs(wildcards):
        return [f"{RUN}/instances/{i}/{filename}" for i in selected_ids()]

    return inputs


INSTANCE_FILES = ["context.json", "prompt.json", "response.json", "patch.diff", "patch.json"]


def run_targets(wildcards):
    """Every file of the run. The per-instance files are requested by name because
    Snakemake does not remake a deleted intermediate file whose downstream files are
    up to date; requested, a deleted one is remade and what follows it is redone."""
    targets = [f"{RUN}/summary.json", f"{RUN}/summary.md"]
    if not config["predictions"]:
        targets += [path for name in INSTANCE_FILES for path in per_instance(name)(wildcards)]
    if config["evaluation"] != "none":
        names = ["report.json"] + (["given_patch.sha256"] if config["predictions"] else [])
        targets += [path for name in names for path in per_instance(name)(wildcards)] + [f"{RUN}/evaluation.json"]
    return targets


class Untracked:
    """A rule parameter that is no rerun trigger. Snakemake reruns a job whose params differ
    from the last run's, comparing the values it can represent (strings, numbers, lists...);
    it leaves out other objects, like this one, which a shell command shows as its text. Not
    being a string, it is not filled with wildcards either (repo_url holds a literal {repo})."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def selection_inputs():
    """The selection as the per-instance jobs read it. ancient(): selecting more instances
    rewrites these files, which must not redo the instances that are already done."""
    return {"instances": ancient(INSTANCES), "index": ancient(INDEX)}
