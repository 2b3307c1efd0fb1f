# Configuration, checked before any job runs, and the input functions of the rules.
import json
import os
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
    except WorkflowError as e:
        sys.exit(f"Invalid configuration: {settings.describe_schema_error(e)}")
    except settings.ConfigError as e:
        sys.exit(f"Invalid configuration: {e}")
    return config


config.update(checked_config(config))

RUN = f"results/{settings.run_id(config)}"
MODEL = settings.model_name(config) if not config["predictions"] else None
PYTHON = f"{sys.executable} -m scripts"
INSTANCES = f"{RUN}/instances.jsonl"
INDEX = f"{RUN}/instances.index.json"


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
    return targets


def selection_inputs():
    """The selection as the per-instance jobs read it. ancient(): selecting more instances
    rewrites these files, which must not redo the instances that are already done."""
    return {"instances": ancient(INSTANCES), "index": ancient(INDEX)}
