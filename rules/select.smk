checkpoint select:
    input:
        # A local dataset or predictions file that changes makes a new selection.
        [path for path in (config["dataset"], config["predictions"]) if path and os.path.isfile(path)],
    output:
        rows=INSTANCES,
        index=INDEX,
    params:
        dataset=config["dataset"],
        split=config["split"],
        instances=",".join(settings.instance_list(config["instances"]) or []),
        filter=config["filter"] or "",
        shuffle="--shuffle" if config["shuffle"] else "",
        seed=config["seed"],
        first_n=f"--count {config['count']}" if config["count"] else "",
        predictions=f"--predictions {config['predictions']}" if config["predictions"] else "",
        require="patch" if config["provider"] == "gold" and not config["predictions"] else "",
    shell:
        PYTHON + ".select --dataset {params.dataset:q} --split {params.split:q}"
        " --instances={params.instances:q} --filter={params.filter:q} {params.shuffle}"
        " --seed {params.seed} {params.first_n} {params.predictions} --require={params.require:q}"
        " --out {output.rows:q} --index {output.index:q}"
