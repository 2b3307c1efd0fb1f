rule generate:
    input:
        **selection_inputs(),
        prompt=f"{RUN}/instances/{{id}}/prompt.json",
    output:
        f"{RUN}/instances/{{id}}/response.json",
    params:
        provider=config["provider"],
        model=MODEL,
        replay=f"--replay-file {config['replay_file']}" if config["replay_file"] else "",
    resources:
        api=1,
    log:
        f"{RUN}/logs/{{id}}/generate.log",
    shell:
        PYTHON + ".generate --prompt {input.prompt:q} --instances {input.instances:q} --index {input.index:q}"
        " --id {wildcards.id:q} --provider {params.provider} --model {params.model:q} {params.replay}"
        " --out {output:q} 2> {log:q}"
