"""The run's configuration: environment layering, checks that stop a bad run early, derived values."""
import os
import re
from pathlib import Path

import yaml

DATASET_SUFFIXES = (".json", ".jsonl", ".parquet")
PROVIDER_MODELS = {"gold": "gold", "replay": None}  # replay: named after its file


class ConfigError(Exception):
    pass


def layer_environment(config, cli_settings, environ):
    """Return config with SWEBENCH_<KEY> variables applied, except for keys set with --config."""
    layered = dict(config)
    for key in config:
        value = environ.get(f"SWEBENCH_{key.upper()}")
        if value is not None and key not in cli_settings:
            layered[key] = yaml.safe_load(value) if value.strip() else None
    return layered


def is_dataset_path(dataset):
    return dataset.endswith(DATASET_SUFFIXES)


def instance_list(instances):
    """The `instances` setting as a list of ids, or None for all."""
    if instances is None:
        return None
    if isinstance(instances, str):
        instances = instances.split(",")
    ids = [i.strip() for i in instances if i.strip()]
    return ids or None


def slug(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def model_name(config):
    if config["model"]:
        return config["model"]
    if config["provider"] == "replay":
        return Path(config["replay_file"]).stem
    return PROVIDER_MODELS[config["provider"]]


def run_id(config):
    if config["run_id"]:
        return config["run_id"]
    if config["predictions"]:
        return slug(f"predictions-{Path(config['predictions']).stem}")
    provider, model = config["provider"], model_name(config)
    return slug(provider if model == provider else f"{provider}-{model}")


def _require_file(path, key, what):
    if not Path(path).exists() or Path(path).is_dir():
        raise ConfigError(
            f"{key}={path}: no such file (relative paths are read from {os.getcwd()}). "
            f"Give the path of {what}."
        )


def describe_schema_error(workflow_error):
    """One line from the jsonschema error inside the error that snakemake.utils.validate raises."""
    import jsonschema

    error = workflow_error.__context__  # raised while handling the jsonschema error
    if not isinstance(error, jsonschema.ValidationError):
        return str(workflow_error)
    key = ".".join(str(part) for part in error.absolute_path)
    where = f"{key}: " if key else ""
    return f"{where}{error.message}. See schemas/config.schema.yaml for what each key takes."


def check(config):
    """Raise ConfigError with a message that says how to fix the first problem found."""
    dataset = config["dataset"]
    if is_dataset_path(dataset):
        _require_file(dataset, "dataset", "a .json, .jsonl or .parquet file of SWE-bench rows")
    elif Path(dataset).is_file():
        raise ConfigError(
            f"dataset={dataset}: a dataset file must end in {', '.join(DATASET_SUFFIXES)}."
        )
    if config["filter"] is not None:
        try:
            re.compile(config["filter"])
        except re.error as e:
            raise ConfigError(f"filter={config['filter']!r} is not a valid regular expression: {e}.")
    if config["provider"] == "replay" and not config["predictions"]:
        if not config["replay_file"]:
            raise ConfigError(
                "provider=replay needs the earlier answers: add --config replay_file=PATH "
                "(a JSONL with instance_id and full_output or model_patch)."
            )
        _require_file(config["replay_file"], "replay_file", "a JSONL of earlier answers")
    if config["predictions"]:
        _require_file(config["predictions"], "predictions", "a predictions JSONL or preds.json")
    if config["prompt_template"]:
        _require_file(config["prompt_template"], "prompt_template", "a YAML prompt template")
