rule context:
    input:
        **selection_inputs(),
        # For context=bm25_13K/27K/40K: the files the select step took from the retrieval dataset.
        **({"retrieval": ancient(RETRIEVAL_ROWS), "retrieval_index": ancient(RETRIEVAL_INDEX)} if RETRIEVAL else {}),
    output:
        f"{RUN}/instances/{{id}}/context.json",
    params:
        # The settings that change a context: a change reruns the contexts and what follows.
        strategy=config["context"],
        context_tokens=f"--context-tokens {config['context_tokens']}" if config["context_tokens"] else "",
        tokenizer=config["tokenizer"],
        retrieval_dataset=RETRIEVAL or "",
        # Where repositories come from changes no context, so it is no rerun trigger.
        repos=Untracked(f"--repo-cache {shlex.quote(config['repo_cache'])} --repo-url {shlex.quote(config['repo_url'])}"),
        retrieval=lambda wildcards, input: (
            f"--retrieval {shlex.quote(input.retrieval)} --retrieval-index {shlex.quote(input.retrieval_index)}"
            if RETRIEVAL else ""
        ),
    log:
        f"{RUN}/logs/{{id}}/context.log",
    shell:
        PYTHON + ".context --instances {input.instances:q} --index {input.index:q} --id {wildcards.id:q}"
        " --strategy {params.strategy} {params.context_tokens} --tokenizer {params.tokenizer}"
        " {params.repos} {params.retrieval} --out {output:q} 2> {log:q}"
