if PREP == RUN:  # else the first model's of several, copied by rules/prompt.smk

    rule context:
        input:
            **selection_inputs(),
            # For context=bm25_13K/27K/40K: the files the select step took from the retrieval dataset.
            **({"retrieval": ancient(RETRIEVAL_ROWS), "retrieval_index": ancient(RETRIEVAL_INDEX)} if RETRIEVAL else {}),
        output:
            f"{RUN}/instances/{{id}}/context.json",
        log:
            f"{RUN}/logs/{{id}}/context.log",
        group:
            "prepare"  # on a cluster, one job with the prompt (profiles/slurm)
        params:
            # The settings that change a context: a change reruns the contexts and what follows.
            # Where repositories come from changes no context: repo_cache and repo_url are read
            # from the config, so they are no rerun trigger.
            strategy=config["context"],
            context_tokens=config["context_tokens"],
            tokenizer=config["tokenizer"],
            retrieval_dataset=RETRIEVAL or "",
        run:
            from scripts import context

            context.run_stage(wildcards.id, input, output, log[0], context_settings())
