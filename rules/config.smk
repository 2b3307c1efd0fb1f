# The configuration, checked before any job runs (rules/paths.smk, rules/models.smk).
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from scripts import settings
from scripts.predictions import PredictionsError, load_predictions

# What only a run needs (an API key, a Docker daemon): not a dry run, --lint, --report or a listing.
RUNS_JOBS = settings.runs_jobs(sys.argv[1:]) and not workflow.output_settings.dryrun


def checked_config(config, entry=None):
    """The config with environment settings and defaults applied; a bad one ends the run here, before any job,
    with one message. entry: the number of the model of models=[...] whose config it is (already layered)."""
    if not entry:
        config = settings.layer_environment(config, workflow.config_settings.overwrite_config, os.environ)
    model = f"models entry {entry} ({settings.run_id(config)}): " if entry else ""
    try:
        validate(config, "../schemas/config.schema.yaml")
        if config["models"]:  # checked entry by entry (rules/models.smk)
            return config
        settings.check(config)
        if config["predictions"]:  # a repeated id or a row without one stops the run here
            load_predictions(config["predictions"])
        if RUNS_JOBS:
            settings.check_api_key(config, os.environ)
            settings.check_price(config)
    except WorkflowError as e:
        sys.exit(f"Invalid configuration: {model}{settings.describe_schema_error(e)}")
    except (settings.ConfigError, PredictionsError) as e:
        sys.exit(f"Invalid configuration: {model}{e}")
    return config
