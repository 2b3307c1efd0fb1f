# The cost estimate, from the prompts of every instance still to ask: the generate jobs wait
# for it, and it stops the run above cost_warn unless confirm_cost=true. Only for the paid
# providers (gold and replay cost nothing).
ESTIMATE = f"{RUN}/estimate.json" if config["provider"] in MODEL_PROVIDERS and not config["predictions"] else None


def estimate_settings():
    from scripts.costs import load_prices

    return {"prices": load_prices(config["prices"]), "answer_tokens": config["estimate_answer_tokens"],
            "max_output_tokens": config["max_output_tokens"], "cost_warn": config["cost_warn"],
            "confirm_cost": config["confirm_cost"]}


if ESTIMATE:

    rule estimate:
        localrule: True
        input:
            per_instance("prompt.json"),
        output:
            ESTIMATE,
        run:
            from scripts import estimate

            ids = [os.path.basename(os.path.dirname(path)) for path in input]
            estimate.run(RUN, ids, MODEL, estimate_settings(), output[0])

    if workflow.output_settings.dryrun:  # the estimate as far as the prompts are built
        from scripts import estimate

        if os.path.exists(INDEX):
            record, missing = estimate.for_run(RUN, list(read_json(INDEX)), MODEL, estimate_settings())
            print(estimate.describe(record) + (f" {len(missing)} instances have no prompt yet and are not counted."
                                               if missing else ""), file=sys.stderr)
        else:
            print("Cost estimate: made once the prompts are built, before any request (nothing is selected yet).",
                  file=sys.stderr)


# Runs in Snakemake's own process when threads are used (the default profile sets
# force-use-threads), so the model clients are imported once, not once per instance.
# A request waits on the network, not on a core: threads 0 leaves the cores to the other
# stages, and `--resources api=N` alone bounds the requests in flight.
rule generate:
    input:
        **selection_inputs(),
        prompt=f"{RUN}/instances/{{id}}/prompt.json",
        # For a model: to rebuild the prompt with less code context when it says it is too long.
        **({"context": f"{RUN}/instances/{{id}}/context.json", "template": rules.prompt.input.template}
           if config["provider"] in MODEL_PROVIDERS else {}),
        # No request before the run's cost estimate is made and accepted. ancient(): a new
        # estimate (more instances) does not redo the answers already in.
        **({"estimate": ancient(ESTIMATE)} if ESTIMATE else {}),
    output:
        # A paid answer is not deleted before its job runs again: the job keeps it, or sets it aside with
        # overwrite=true (and Snakemake puts it back if the job fails).
        update(f"{RUN}/instances/{{id}}/response.json") if config["provider"] in MODEL_PROVIDERS
        else f"{RUN}/instances/{{id}}/response.json",
    params:
        # The settings that change an answer: a change reruns generation and what follows.
        provider=config["provider"],
        model=MODEL,
        base_url=config["base_url"],
        temperature=config["temperature"],
        max_output_tokens=config["max_output_tokens"],
        replay_file=config["replay_file"],
    threads: 0
    resources:
        api=1,
    log:
        f"{RUN}/logs/{{id}}/generate.log",
    run:
        from scripts import generate

        generate.run(input.prompt, input.get("context"), input.get("template"), input.instances, input.index,
                     wildcards.id, params.provider, params.model,
                     generate.api_settings(params.provider, config, RUN), output[0], log[0])
