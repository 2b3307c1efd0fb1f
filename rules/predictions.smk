if config["predictions"]:

    rule predictions:
        localrule: True
        input:
            given=config["predictions"],
            index=INDEX,
        output:
            f"{RUN}/predictions.jsonl",
        shell:
            PYTHON + ".predictions --index {input.index:q} --given {input.given:q} --out {output:q}"

else:

    rule predictions:
        localrule: True
        input:
            # every instance's patch, or with allow_partial those that are made
            patches=merged("patch.diff"),
        output:
            f"{RUN}/predictions.jsonl",
        params:
            model=MODEL,
        run:
            from scripts import predictions

            ids = [os.path.basename(os.path.dirname(path)) for path in input.patches]
            predictions.write_generated(ids, RUN, params.model, output[0])
