# Extract, repair and judge each answer's patch. With apply_check the patch must apply at the
# base commit; with a model provider, a patch that fails goes back to the model up to
# repair_attempts times. It runs in Snakemake's own process when threads are used (the default
# profile sets force-use-threads), so it writes its log itself; a job that may ask the model
# takes an `api` slot.
REPAIR_ATTEMPTS = config["repair_attempts"] if config["provider"] in MODEL_PROVIDERS else 0


rule patch:
    input:
        response=f"{RUN}/instances/{{id}}/response.json",
        # the files that search/replace edits are applied to without the apply check
        context=f"{RUN}/instances/{{id}}/context.json",
        # the instance's repository and base commit, for the apply check
        **(selection_inputs() if config["apply_check"] else {}),
        # the conversation that self-repair continues
        **({"prompt": f"{RUN}/instances/{{id}}/prompt.json"} if REPAIR_ATTEMPTS else {}),
    output:
        diff=f"{RUN}/instances/{{id}}/patch.diff",
        record=f"{RUN}/instances/{{id}}/patch.json",
    params:
        # The settings that change a verdict: a change reruns the patch stage and what follows.
        apply_check=config["apply_check"],
        repair_attempts=REPAIR_ATTEMPTS,
    resources:
        api=1 if REPAIR_ATTEMPTS else 0,
    log:
        f"{RUN}/logs/{{id}}/patch.log",
    run:
        from scripts import generate, patch

        patch.run_stage(
            wildcards.id, input.response, input.context, input.get("prompt"), input.get("instances"), input.get("index"),
            output.diff, output.record, log[0],
            repos={"repo_cache": config["repo_cache"], "repo_url": config["repo_url"]} if params.apply_check else None,
            repair={"provider": config["provider"], "model": MODEL, "attempts": params.repair_attempts,
                    "settings": settings.api_settings(config["provider"], config, RUN)} if params.repair_attempts else None,
        )
