# Runs in Snakemake's own process when threads are used (the default profile sets
# force-use-threads), so the model clients are imported once, not once per instance.
# A request waits on the network, not on a core: threads 0 leaves the cores to the other
# stages, and `--resources api=N` alone bounds the requests in flight. Every sample ({sample}: "" for
# sample 1, samples/<s>/ for the others) sends the same request: its index is in the file paths only.
rule generate:
    input:
        **selection_inputs(),
        # For a model: to rebuild the prompt with less code context when it says it is too long.
        **(
            {"context": f"{RUN}/instances/{{id}}/context.json", "template": TEMPLATE}
            if config["provider"] in MODEL_PROVIDERS
            else {}
        ),
        # No request before the run's cost estimate is made and accepted. ancient(): a new
        # estimate (more instances) does not redo the answers already in.
        **({"estimate": ancient(ESTIMATE)} if ESTIMATE else {}),
        **({"batch": ancient(BATCH_DONE)} if BATCH_DONE else {}),
        prompt=f"{RUN}/instances/{{id}}/prompt.json",
    output:
        # A paid answer is not deleted before its job runs again: the job keeps it, or sets it aside with
        # overwrite=true (and Snakemake puts it back if the job fails).
        (
            update(f"{RUN}/instances/{{id}}/{{sample}}response.json")
            if config["provider"] in MODEL_PROVIDERS
            else f"{RUN}/instances/{{id}}/{{sample}}response.json"
        ),
    log:
        f"{RUN}/logs/{{id}}/{{sample}}generate.log",
    # The run as a pipeline (rules/prompt.smk): a request before anything else, when an api unit is free.
    priority: 3
    threads: 0
    resources:
        api=1,
    params:
        # The settings that change an answer: a change reruns generation and what follows.
        **settings.generate_params(config),
    run:
        from scripts import generate

        generate.run_stage(wildcards.id, input, output, log[0], generate_settings(wildcards.sample))
