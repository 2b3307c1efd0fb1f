# models=[...]: several models in one run. Each model is a module of this workflow (Snakefile) with the
# run's settings and its entry's, and has its own run folder and rules (model<k>_<rule>). The first
# model's folder makes the selection, the contexts and the prompts; the others copy them
# (rules/select.smk, rules/prompt.smk). One estimate of every model's cost comes before any request,
# and max_cost holds across the models' ledgers.


include: "config.smk"


def model_configs(config):
    """The config of each model, each a run of one model; a bad entry ends the run here, before any model's
    module is read (which writes to its run folder)."""
    config = checked_config(config)
    try:
        configs = settings.model_configs(config)
    except settings.ConfigError as e:
        sys.exit(f"Invalid configuration: {e}")
    configs = [checked_config(model_config, number) for number, model_config in enumerate(configs, 1)]
    folders = [f"results/{settings.run_id(c)}" for c in configs]
    for number, model_config in enumerate(configs, 1):
        # what rules/paths.smk takes from the run of several models
        model_config["shared"] = {
            "entry": number,
            # the settings the entry gives are given, as those of the command line (rules/paths.smk GIVEN)
            "given": sorted(config["models"][number - 1]),
            "prep_run": folders[0],
            "ledgers": [f"{folder}/spend.jsonl" for folder in folders],
            # context=auto chooses for the run of all: the first model makes every model's contexts
            "providers": [c["provider"] for c in configs],
        }
    return configs


MODEL_CONFIGS = model_configs(config)
MODULES = [f"model{number}" for number in range(1, len(MODEL_CONFIGS) + 1)]


for name, model_config in zip(MODULES, MODEL_CONFIGS):
    workflow.module(name, snakefile=os.path.join(workflow.basedir, "Snakefile"), config=model_config)
    workflow.userule(rules=["*"], from_module=name, name_modifier=f"{name}_*")(lambda: None)


def take_profile_settings():
    """Snakemake applies --set-threads and --set-resources (a profile's set-threads, set-resources) by exact name
    as it defines each rule. Each model's copy (model<k>_generate) takes those given for generate, unless
    given its own; as Snakemake applies them (Workflow.rule)."""
    given = workflow.resource_settings
    threads, resources = given._parsed_overwrite_threads, given._parsed_overwrite_resources
    for copy in workflow.rules:
        prefix, _, name = copy.name.partition("_")
        if prefix in MODULES and name in threads and copy.name not in threads:
            copy.resources["_cores"] = threads[name]
        if prefix in MODULES and name in resources and copy.name not in resources:
            copy.resources.update(resources[name])


take_profile_settings()
MODELS = [workflow.globals[name] for name in MODULES]  # each module's names: RUN, MODEL, run_targets...
SNAKEMAKE_PATCHES = MODELS[0].SNAKEMAKE_PATCHES
snakemake_patches = MODELS[0].snakemake_patches
PRICED = [model for model in MODELS if model.ESTIMATE]  # the models whose requests wait for the estimate
COMPARE = "results/compare/" + "-vs-".join(os.path.basename(model.RUN) for model in MODELS)


def run_targets(wildcards):
    """Every file of every model's run, and their comparison."""
    targets = [path for model in MODELS for path in model.run_targets(wildcards)]
    return targets + ([rules.compare.output.md] if len(MODELS) > 1 else [])


def failure_advice():
    return "\n".join(model.failure_advice() for model in MODELS)


include: "across_models.smk"
include: "compare.smk"
