"""The run's configuration: environment layering, checks that stop a bad run early, derived values."""
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

from scripts import costs, images, providers
from scripts.providers import ASK, DEFAULT_MODELS, KEY_VARIABLES

DATASET_SUFFIXES = (".json", ".jsonl", ".parquet")
# The datasets' short names (dataset=lite).
HUB_NAMES = {
    "lite": "SWE-bench/SWE-bench_Lite",
    "verified": "SWE-bench/SWE-bench_Verified",
    "full": "SWE-bench/SWE-bench",
    "multimodal": "SWE-bench/SWE-bench_Multimodal",
    "multilingual": "SWE-bench/SWE-bench_Multilingual",
}
# context strategies that read a SWE-bench retrieval dataset, and its name on the hub
RETRIEVAL_DATASETS = {f"bm25_{size}": f"princeton-nlp/SWE-bench_bm25_{size}" for size in ("13K", "27K", "40K")}
# The datasets whose test and dev splits SWE-bench's retrieval sets hold, by instance id (Lite and Verified are
# subsets of SWE-bench's own test and dev splits).
RETRIEVAL_COVERS = {f"{owner}/SWE-bench{name}" for owner in ("SWE-bench", "princeton-nlp")
                    for name in ("", "_Lite", "_Verified")}
PROVIDER_MODELS = {"gold": "gold", "replay": None, **DEFAULT_MODELS}  # replay: named after its file
# The settings that make the answers of a run (its requests, and the prompts and patch verdicts that
# repair requests are made from): a run folder holds paid answers made with one set of them.
# max_output_tokens is not among them: an answer that stopped by itself stays what it is with a larger limit, and
# one the limit cut off is asked again (records.set_aside_cut_off).
ANSWER_SETTINGS = ("provider", "model", "base_url", "temperature", "replay_file",
                   "prompt_style", "prompt_template", "context", "context_tokens", "tokenizer", "retrieval_dataset",
                   "apply_check", "repair_attempts", "openai_api", "reasoning_effort", "agent")
# Request settings that only these providers send: for another one they change no answer. The Anthropic API
# version of the pinned client (2026-10-21) refuses temperature, and reasoning_effort is OpenAI's.
SENT_ONLY_BY = {"temperature": ("openai",), "openai_api": ("openai",), "reasoning_effort": ("openai",)}
# The hosts of the providers' own APIs: a model served elsewhere is not billed at the provider's prices.
PROVIDER_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
# Snakemake options that read the workflow without running its jobs.
NOT_A_RUN = {"--lint", "--report", "--summary", "-S", "--detailed-summary", "-D", "-l", "--dag", "--rulegraph",
             "--filegraph", "--d3dag", "--touch", "-t", "--unlock", "--cleanup-metadata", "--delete-all-output",
             "--delete-temp-output", "--archive", "--containerize", "--export-cwl", "--generate-unit-tests"}


class ConfigError(Exception):
    pass


def layer_environment(config, cli_settings, environ):
    """Return config with SWEBENCH_<KEY> variables applied, except for keys set with --config.

    Snakemake reads only True/False as booleans on the command line; true and false (as
    YAML and the environment write them) are taken for booleans too."""
    layered = dict(config)
    for key in config:
        value = environ.get(f"SWEBENCH_{key.upper()}")
        if value is not None and key not in cli_settings:
            layered[key] = yaml.safe_load(value) if value.strip() else None
        elif isinstance(layered[key], str) and layered[key].lower() in ("true", "false"):
            layered[key] = layered[key].lower() == "true"
    if isinstance(layered.get("prices"), dict):  # --config 'prices={m: {input: 1}}' gives its numbers as text
        layered["prices"] = {model: {name: yaml.safe_load(rate) if isinstance(rate, str) else rate
                                     for name, rate in (price or {}).items()} if isinstance(price, dict) else price
                             for model, price in layered["prices"].items()}
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
            raise ConfigError(f"filter={config['filter']!r} is not a valid regular expression: {e}.") from None
    if config["provider"] == "replay" and not config["predictions"]:
        if not config["replay_file"]:
            raise ConfigError(
                "provider=replay needs the earlier answers: add --config replay_file=PATH "
                "(a JSONL with instance_id and full_output or model_patch)."
            )
        _require_file(config["replay_file"], "replay_file", "a JSONL of earlier answers")
    if config["predictions"]:
        _require_file(config["predictions"], "predictions", "a predictions JSONL or preds.json")
    if config.get("samples", 1) > 1 and (config["predictions"] or config["batch"]):
        setting, takes, way = (
            (f"predictions={config['predictions']}", "takes one given patch per instance", "leave out predictions.")
            if config["predictions"] else ("batch=true", "asks one answer per instance", "set batch=false."))
        raise ConfigError(f"samples={config['samples']} asks each instance several times, but {setting} {takes}: "
                          f"leave samples at 1, or {way}")
    if config.get("validate_gold") and config["evaluation"] != "docker":
        raise ConfigError(f"validate_gold=true runs the gold and empty patches in the instance images on the Docker "
                          f"engine, and evaluation={config['evaluation']} does not use it: set evaluation=docker, or "
                          "leave validate_gold at false.")
    if config.get("agent") and not config["predictions"]:
        check_agent(config)
    if config["prompt_template"]:
        _require_file(config["prompt_template"], "prompt_template", "a YAML prompt template")
    try:
        images.check_template(config)
    except images.ImageError as e:
        raise ConfigError(str(e)) from None
    if config["retrieval_dataset"] and is_dataset_path(config["retrieval_dataset"]):
        _require_file(config["retrieval_dataset"], "retrieval_dataset",
                      "a .parquet, .jsonl or .json file with instance_id and text")


def context_choice(config, run_providers=None):
    """(strategy, why) of the run's context: for context=auto, what a run of this provider and dataset gets (the
    strategy given, for any other). auto: no code for gold, replay and given predictions, which make no prompt of
    their own; for a model, SWE-bench's own baseline, the bm25_13K retrieval set, where it holds the selected
    instances (SWE-bench's test and dev splits, of which Lite and Verified are subsets with the same ids), else
    BM25 over the repository at base_commit at the same size. run_providers: every model's provider, for
    models=[...], whose first model makes the contexts of all."""
    if config["context"] != "auto":
        return config["context"], f"context={config['context']} was given"
    providers = run_providers or [config["provider"]]
    if config["predictions"]:
        return "none", "context=auto: predictions are given, no model is asked"
    if config.get("agent"):
        return "none", f"context=auto: agent={config['agent']} reads the repository in its container"
    if not any(provider in ASK for provider in providers):
        return "none", f"context=auto: provider {'/'.join(providers)} asks no model"
    if config["retrieval_dataset"]:
        return "bm25_13K", f"context=auto: the retrieval set given, retrieval_dataset={config['retrieval_dataset']}"
    name = HUB_NAMES.get(config["dataset"], config["dataset"])
    if name in RETRIEVAL_COVERS and config["split"] in ("test", "dev"):
        return "bm25_13K", (f"context=auto: SWE-bench's own baseline, {RETRIEVAL_DATASETS['bm25_13K']}, holds "
                            f"split {config['split']} of {name}")
    return "bm25", (f"context=auto: {RETRIEVAL_DATASETS['bm25_13K']} does not hold dataset {config['dataset']} split "
                    f"{config['split']}; BM25 over the repository at base_commit, within "
                    f"{config['context_tokens'] or 13000:,} tokens")


def check_agent(config):
    """agent=<config>: a mini-swe-agent config, a model provider, one request at a time (no batch)."""
    if config["provider"] not in ASK:
        raise ConfigError(f"agent={config['agent']} asks a model at every step, and provider={config['provider']} "
                          f"asks none: set provider to one of {', '.join(sorted(ASK))} (with model).")
    if config["batch"]:
        raise ConfigError(f"agent={config['agent']} needs each answer before its next request, and batch=true "
                          "answers within hours: set batch=false.")
    from scripts.agent import AgentConfigError, load_config

    try:
        load_config(config["agent"], {})
    except AgentConfigError as e:
        raise ConfigError(str(e)) from None


def retrieval_source(config):
    """The retrieval dataset the select step reads for context=bm25_13K/27K/40K, else None."""
    if config["context"] not in RETRIEVAL_DATASETS or config["predictions"]:
        return None
    return config["retrieval_dataset"] or RETRIEVAL_DATASETS[config["context"]]


def check_api_key(config, environ):
    """Stop a run whose provider needs an API key that the environment lacks."""
    variable = KEY_VARIABLES.get(config["provider"])
    if variable is None or config["predictions"] or environ.get(variable):
        return
    if base_url(config, environ):
        return  # a local server usually needs no key
    raise ConfigError(
        f"provider={config['provider']} needs an API key: set the environment variable {variable} "
        "(keys are read from the environment only). A dry run (-n) works without it."
    )


def check_price(config):
    """Stop a run with a budget whose model has no known price: max_cost could not bound its spend."""
    if config["provider"] not in ASK or config["predictions"] or config["max_cost"] is None:
        return
    model, database = model_name(config), database_prices(config, os.environ)
    if costs.price_for(config["provider"], model, costs.load_prices(config["prices"]), config["batch"], database) is None:
        raise ConfigError(f"max_cost={config['max_cost']:g} is set, but "
                          f"{costs.unknown_price_message(config['provider'], model, database)} Nothing was sent.")


def runs_jobs(argv):
    """Whether snakemake was called (with these arguments) to run jobs, rather than to lint, report,
    list or draw the workflow."""
    names = {arg.split("=", 1)[0] for arg in argv}
    return not (names & NOT_A_RUN or any(name.startswith("--list") for name in names))


def base_url(config, environ):
    """The API address of a model provider: base_url, else the client's own variable (OPENAI_BASE_URL...)."""
    if config["base_url"] or config["provider"] not in ASK:
        return config["base_url"]
    return environ.get(f"{config['provider'].upper()}_BASE_URL")


def sends(provider, key):
    """Whether the requests of provider carry the setting key."""
    return provider in SENT_ONLY_BY.get(key, (provider,))


def answer_settings(config, environ):
    """The values of ANSWER_SETTINGS that this run's answers are made with (those its provider sends)."""
    values = {key: config[key] for key in ANSWER_SETTINGS if sends(config["provider"], key)}
    values["model"] = model_name(config)
    values["base_url"] = base_url(config, environ)
    return values


def generate_params(config):
    """The generate rule's params: the settings that change an answer, so that a change of one asks again. The
    settings that the provider does not send keep their defaults (temperature 0.0), as does max_output_tokens
    (16384; a larger one asks again only the answers it cut off), so that changing them asks nothing again and the
    runs made before, which had them among their params, are not asked again either."""
    provider = config["provider"]
    return {
        "provider": provider,
        "model": model_name(config),
        "base_url": config["base_url"],
        "temperature": config["temperature"] if sends(provider, "temperature") else 0.0,
        "max_output_tokens": 16384,
        "replay_file": config["replay_file"],
        # only when set: the answers of runs made before them are not asked again
        **{key: config[key] for key, default in (("openai_api", "auto"), ("reasoning_effort", None))
           if sends(provider, key) and config[key] != default},
    }


def given_keys(cli_settings, environ):
    """The settings the user gave: with --config or --configfile (cli_settings), or as SWEBENCH_<KEY> variables."""
    return set(cli_settings) | {name.removeprefix("SWEBENCH_").lower() for name in environ if name.startswith("SWEBENCH_")}


def agent_temperature(config, given):
    """The temperature an agent's steps send: the user's, or none. mini-swe-agent's request (its swebench config
    through litellm) sends no temperature its config does not set, so the default of config.yaml is not sent."""
    return config["temperature"] if "temperature" in given else None


def agent_params(config, given):
    """The agent rule's params: generate_params with the temperature its steps send."""
    params = generate_params(config)
    if sends(config["provider"], "temperature"):
        params["temperature"] = agent_temperature(config, given)
    return params


def agent_request_settings(api, config, given):
    """The request settings of an agent's steps (api: the run's). As mini-swe-agent's request, no output limit is sent
    unless the user set max_output_tokens (the Anthropic Messages API requires one: there the model's own is sent).
    The budget reserves each step's worst case at the model's own limit (output_limits.yaml), which is what it may
    write without one; at max_output_tokens for a model whose limit is not known."""
    settings = dict(api, temperature=agent_temperature(config, given))
    if "max_output_tokens" not in given:
        settings["send_output_limit"] = False
        settings["max_output_tokens"] = (providers.own_output_limit(config["provider"], model_name(config), api)
                                         or config["max_output_tokens"])
    return settings


def database_prices(config, environ):
    """Whether the genai-prices database prices the run's model: its provider's own API serves it, or the user
    says that the server at base_url bills at the provider's prices (provider_prices). A model of another server
    (vLLM, Ollama...) is priced only by the prices setting."""
    url = base_url(config, environ)
    own = PROVIDER_HOSTS.get(config["provider"])
    return not url or config["provider_prices"] or (own is not None and urlparse(url).hostname == own)


def check_answer_settings(recorded, current, run_dir):
    """Raise ConfigError when the run folder holds paid answers made with other settings: the jobs would
    ask again and replace them."""
    if not recorded or recorded.get("provider") not in ASK:
        return
    # a key the record lacks came after the run was made: its default then is what made the answers; a key the
    # current settings lack is one the provider does not send
    changed = [key for key in ANSWER_SETTINGS if key in recorded and key in current and recorded[key] != current[key]]
    if not changed:
        return
    differences = ", ".join(f"{key}={recorded.get(key)!r} (now {current.get(key)!r})" for key in changed)
    raise ConfigError(
        f"the run {run_dir} holds answers paid for with {differences}, and this run would ask again and replace "
        f"them. Nothing was asked. To keep them and start a new run, give it another folder: --config "
        f"run_id=NAME. To ask again in this folder, add --config overwrite=true: each earlier answer is kept "
        "beside the new one as <name>.overwritten-<time>.json. To go on with the earlier answers, run with "
        "the settings they were made with."
    )


def api_settings(provider, config, run_dir):
    """Settings of a request from the run's config and the environment (where the key lives)."""
    url = base_url(dict(config, provider=provider), os.environ)
    key_variable = providers.KEY_VARIABLES.get(provider)
    return {
        "replay_file": config["replay_file"],
        "base_url": url,
        # Servers behind base_url (vLLM, Ollama, ...) often need no key, but the clients want one.
        "api_key": key_variable and (os.environ.get(key_variable) or ("unused" if url else None)),
        "temperature": config["temperature"],
        "openai_api": config["openai_api"],
        "batch": config["batch"],
        "reasoning_effort": config["reasoning_effort"],
        "max_output_tokens": config["max_output_tokens"],
        "request_timeout": config["request_timeout"],
        "max_attempts": config["max_attempts"],
        "retry_backoff": config["retry_backoff"],
        "max_cost": config["max_cost"],
        "prices": costs.load_prices(config["prices"]),
        "database_prices": database_prices(dict(config, provider=provider), os.environ),
        "ledger": str(Path(run_dir) / "spend.jsonl"),
        "overwrite": config["overwrite"],
    }


def derived(config):
    """What the rules take from a checked config, worked out once: the run folder, the model,
    the request settings, the repository settings of the apply check and the repair attempts."""
    run_dir = f"results/{run_id(config)}"
    asks_model = config["provider"] in providers.ASK and not config["predictions"]
    return {
        "run_id": run_id(config),
        "run_dir": run_dir,
        "model": model_name(config) if not config["predictions"] else None,
        "api": {**api_settings(config["provider"], config, run_dir),
                "prompt_cache": asks_model and config["provider"] == "anthropic" and config["prompt_cache"]},
        "repos": {"repo_cache": config["repo_cache"], "repo_url": config["repo_url"]} if config["apply_check"] else None,
        # an agent's diff goes to the predictions as the agent left it: no repair stage
        "repair_attempts": config["repair_attempts"] if asks_model and not config.get("agent") else 0,
    }


def model_configs(config):
    """The config of each model of models=[...]: the run's settings with the entry's. Values given on the command
    line come as text, and numbers among them are read as numbers. Raise ConfigError when two entries would
    write the same run folder or the run sets run_id."""
    if config["run_id"]:
        raise ConfigError(f"run_id={config['run_id']} names one run folder, and models=[...] writes one per model: "
                          "leave run_id out and give each entry of models its own run_id if you want to name them.")
    configs = []
    for entry in config["models"]:
        entry = {key: yaml.safe_load(value) if isinstance(value, str) and key not in ("model", "run_id") else value
                 for key, value in entry.items()}
        configs.append({**config, "models": None, **entry})
    folders = [run_id(c) for c in configs]
    for number, folder in enumerate(folders, 1):
        if folders.index(folder) + 1 != number:
            raise ConfigError(f"models: entries {folders.index(folder) + 1} and {number} would both write "
                              f"results/{folder}: give each its own run_id (for example run_id: {folder}-{number}).")
    return configs
