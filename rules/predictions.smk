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
            # every instance's patch (the repaired one, with a repair stage), or with allow_partial those made
            patches=merged(PATCH),
        output:
            f"{RUN}/predictions.jsonl",
        params:
            model=MODEL,
        run:
            from scripts import predictions

            predictions.write_generated(input.patches, params.model, output[0])
