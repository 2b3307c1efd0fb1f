if config["predictions"]:

    rule predictions:
        input:
            given=config["predictions"],
            index=INDEX,
        output:
            f"{RUN}/predictions.jsonl",
        shell:
            PYTHON + ".predictions --index {input.index:q} --given {input.given:q} --out {output:q}"

else:

    rule predictions:
        input:
            index=INDEX,
            patches=per_instance("patch.diff"),
        output:
            f"{RUN}/predictions.jsonl",
        params:
            run_dir=RUN,
            model=MODEL,
        shell:
            PYTHON + ".predictions --index {input.index:q} --run-dir {params.run_dir:q}"
            " --model {params.model:q} --out {output:q}"
