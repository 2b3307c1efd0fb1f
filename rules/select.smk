if PREP != RUN:

    # A model of several after the first: the first model's selection (rules/models.smk).
    checkpoint select:
        input:
            rows=f"{PREP}/instances.jsonl",
            index=f"{PREP}/instances.index.json",
        output:
            rows=update(INSTANCES),
            index=update(INDEX),
        log:
            f"{RUN}/logs/select.log",
        localrule: True
        run:
            from scripts.common import append_log, copy_atomic

            copy_atomic(input.rows, output.rows)
            copy_atomic(input.index, output.index)
            append_log(log[0], f"the selection of {PREP}")

else:

    checkpoint select:
        input:
            # A local dataset, predictions or retrieval file that changes makes a new selection.
            **{
                name: path
                for name, path in (
                    ("dataset", config["dataset"]),
                    ("predictions", config["predictions"]),
                    ("retrieval", RETRIEVAL),
                )
                if path and os.path.isfile(path)
            },
        output:
            # update(): a selection that is rejected (unknown ids, an unreachable dataset...) leaves the run's
            # earlier selection as it was, where Snakemake would delete the outputs of a job that fails.
            **({"retrieval": update(RETRIEVAL_ROWS), "retrieval_index": update(RETRIEVAL_INDEX)} if RETRIEVAL else {}),
            rows=update(INSTANCES),
            index=update(INDEX),
        log:
            f"{RUN}/logs/select.log",
        # Once per run, on the machine that runs Snakemake (a cluster's login node, which reaches the hub).
        localrule: True
        params:
            # a local file as an input (where the job sees it), else a dataset's name
            dataset=lambda wildcards, input: input.get("dataset", config["dataset"]),
            split=config["split"],
            instances=",".join(settings.instance_list(config["instances"]) or []),
            filter=config["filter"] or "",
            shuffle="--shuffle" if config["shuffle"] else "",
            seed=config["seed"],
            first_n=f"--count {config['count']}" if config["count"] else "",
            predictions=f"--predictions {config['predictions']}" if config["predictions"] else "",
            require=(
                "patch"
                if (config["provider"] == "gold" or config["context"] == "oracle") and not config["predictions"]
                else ""
            ),
            retrieval=(
                f"--retrieval {shlex.quote(RETRIEVAL)} --retrieval-out {RETRIEVAL_ROWS} --retrieval-index {RETRIEVAL_INDEX}"
                if RETRIEVAL
                else ""
            ),
        shell:
            "python -m scripts.select --dataset {params.dataset:q} --split {params.split:q}"
            " --instances={params.instances:q} --filter={params.filter:q} {params.shuffle}"
            " --seed {params.seed} {params.first_n} {params.predictions} --require={params.require:q}"
            " {params.retrieval} --out {output.rows:q} --index {output.index:q} 2> >(tee {log:q} >&2)"
