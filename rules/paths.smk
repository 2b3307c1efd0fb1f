# The run's paths and what the rules take from the config, worked out once when the workflow is read; the
# config is checked first (rules/config.smk). Included before every other rule file.
import os
import shlex
import sys


include: "config.smk"


from scripts.providers import ASK as MODEL_PROVIDERS  # the providers that ask a model (not gold or replay)
from scripts.common import sample_number
from scripts.costs import price_for
from scripts import images, snakemake_patches

# A model's module of a run of several models (rules/models.smk): its number, the run folder that makes the
# selection, contexts and prompts, and every model's ledger (max_cost holds across them).
SHARED = config.pop("shared", None)
config.update(checked_config(config, SHARED and SHARED["entry"]))
# context=auto: the strategy it stands for with this provider and dataset, and why (run.json, the summary). The
# rules read the strategy from config["context"].
config["context"], CONTEXT_WHY = settings.context_choice(config, SHARED and SHARED["providers"])

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
# Shell commands run `python -m scripts.<module>` with the interpreter that runs Snakemake (the project's
# .venv), the one the rules that run in Snakemake's process use; no rule has a conda environment or container.
shell.prefix(
    "set -euo pipefail; "
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH; "
)
INSTANCES = f"{RUN}/instances.jsonl"
INDEX = f"{RUN}/instances.index.json"
# The retrieval dataset (context=bm25_13K/27K/40K) and the files the select step takes from it.
RETRIEVAL = settings.retrieval_source(config)
RETRIEVAL_ROWS = f"{RUN}/retrieval.jsonl"
RETRIEVAL_INDEX = f"{RUN}/retrieval.index.json"


wildcard_constraints:
    id=r"[^/]+",
    sample=r"(samples/([2-9]|[1-9][0-9]+)/)?",


# agent=<config>: an agent's trajectory in place of context, prompt and generate (rules/agent.smk).
AGENT = config["agent"] if config["provider"] in MODEL_PROVIDERS and not config["predictions"] else None

# The files of each instance, in the order of its stages, and those that each sample has of its own.
if AGENT:
    INSTANCE_FILES = ["trajectory.json", "response.json", "patch.diff", "patch.json"]
    SAMPLE_FILES = INSTANCE_FILES
else:
    INSTANCE_FILES = ["context.json", "prompt.json", "response.json", "patch.diff", "patch.json"]
    INSTANCE_FILES += ["repair.diff", "repair.json"] if REPAIR_ATTEMPTS else []
    SAMPLE_FILES = INSTANCE_FILES[2:]

# The cost estimate, which every request waits for. Only for a model with a price: for one without (a
# local server) it could stop nothing, and requests start while other prompts are still being built.
ESTIMATE = (
    f"{RUN}/estimate.json"
    if config["provider"] in MODEL_PROVIDERS
    and not config["predictions"]
    and not AGENT
    and price_for(
        config["provider"], MODEL, DERIVED["api"]["prices"], config["batch"], DERIVED["api"]["database_prices"]
    )
    is not None
    else None
)

# Where the instance images come from (scripts/images.py): with prebuilt images, each is pulled by a job of its own
# ahead of its evaluation (rules/images.smk); the arguments that name it, and those of the pulls.
PULLS = config["evaluation"] == "docker" and images.template(config) is not None
IMAGE_SOURCE = (
    f"--image-source={shlex.quote(config['image_source'] or '')}"
    f" --namespace={shlex.quote(config['image_namespace'] or '')} --arch {config['image_arch']}"
)
IMAGE_ARGUMENTS = f"{IMAGE_SOURCE} --min-free-disk-gb {config['min_free_disk_gb']} --pull-wait {config['pull_wait']}"
# On a cluster (profiles/slurm; Snakemake ignores groups on a workstation) an instance's pull is one group job with
# the stages that run in its image, so that they find it on the node that pulled it (docs/clusters.md): its
# validation and evaluations ("evaluate"). With an agent, its trajectory ("agent") instead, alone of the instance's
# samples: a paid stage ends its group, since Snakemake deletes the outputs of every job of a group job that fails,
# and the evaluations cannot join it (between them lie the patch and the merged predictions); they are a group
# job of their own with the validation.
PULL_GROUP = ("agent" if SAMPLES == 1 else None) if AGENT else "evaluate"

# With batch=true, the batch job's mark that every instance still without an answer was asked (rules/batch.smk).
BATCH_DONE = (
    f"{RUN}/batch/done.json"
    if config["batch"] and config["provider"] in MODEL_PROVIDERS and not config["predictions"] and not AGENT
    else None
)


def instance_ids(paths):
    """The instance ids of per-instance files (results/<run>/instances/<id>/<file>)."""
    return [os.path.basename(os.path.dirname(path)) for path in paths]


# What a job reads from the config besides its params.
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


def context_settings():
    """What a context job reads from the config: its params, and where repositories come from."""
    return {
        "strategy": config["context"],
        "context_tokens": config["context_tokens"],
        "tokenizer": config["tokenizer"],
        "repo_cache": config["repo_cache"],
        "repo_url": config["repo_url"],
    }


def request_settings(sample):
    """The settings of a sample's requests ({sample}: "" or samples/<s>/)."""
    return dict(DERIVED["api"], sample=sample_number(sample))


def generate_settings(sample):
    return {"provider": config["provider"], "model": MODEL, "settings": request_settings(sample)}


def repair_settings(sample):
    return {
        "provider": config["provider"],
        "model": MODEL,
        "attempts": REPAIR_ATTEMPTS,
        "settings": request_settings(sample),
        "repos": DERIVED["repos"],
    }


def batch_settings():
    """What the batch job (rules/batch.smk) reads from the config, besides its instances."""
    return {"provider": config["provider"], "model": MODEL, "settings": DERIVED["api"], "poll_s": config["batch_poll"]}


# the settings the user gave (the command line's, and those of this model's entry of models=[...]): an agent's
# steps send no temperature and no output limit the user did not set
GIVEN = settings.given_keys(workflow.config_settings.overwrite_config, os.environ) | set(
    SHARED["given"] if SHARED else ()
)


def agent_settings(sample):
    """What an agent job reads from the config ({sample}: "" or samples/<s>/)."""
    return {
        **generate_settings(sample),
        "settings": settings.agent_request_settings(request_settings(sample), config, GIVEN),
        "agent": {
            "config": AGENT,
            "limits": {
                "step_limit": config["agent_step_limit"],
                "cost_limit": config["agent_cost_limit"],
                "wall_time_limit_seconds": config["agent_wall_time_limit"],
            },
            "engine": config["agent_engine"],
            "images": {key: config[key] for key in ("image_source", "image_namespace", "image_arch")},
            "run_id": DERIVED["run_id"],
            # what makes a trajectory (the rule's params): a saved state made otherwise is not resumed
            "made_with": {**settings.agent_params(config, GIVEN), "agent": AGENT},
        },
    }
