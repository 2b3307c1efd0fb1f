# Evaluation of each instance's prediction with the official SWE-bench harness, and the
# merge of the reports into evaluation.json (the harness's run report format).
if config["evaluation"] != "none":
    from pathlib import Path

    from snakemake.utils import format as snakemake_format

    from scripts import forked
    from scripts.evaluate import patch_sha256
    from scripts.predictions import load_predictions

    if config["predictions"]:
        # The hash of each instance's given patch, in a file of its own that changes only with
        # that patch. (A params trigger on the evaluate job would not do: a changed predictions
        # file reruns the select checkpoint, and Snakemake then skips the params check of every
        # job downstream of it.)
        GIVEN_PATCHES = {
            i: patch_sha256(p.get("model_patch")) for i, p in load_predictions(config["predictions"]).items()
        }

        rule given_patch:
            input:
                ancient(config["predictions"]),
            output:
                f"{RUN}/instances/{{id}}/given_patch.sha256",
            # its evaluation's priority: the evaluations become ready in the order they should start in
            priority: evaluation_priority
            params:
                sha256=lambda wildcards: GIVEN_PATCHES.get(wildcards.id, ""),
            run:
                Path(output[0]).write_text(f"{params.sha256}\n")

    rule evaluate:
        input:
            **selection_inputs(),
            # with validate_gold, after the instance's validation (rules/validate.smk), in the same image; ancient():
            # a validation made again does not evaluate again
            **({"validation": ancient(f"{RUN}/instances/{{id}}/validation.json")} if config["validate_gold"] else {}),
            # Every job reads its prediction from the merged file, which is rewritten whenever
            # any patch changes: ancient() keeps that from re-evaluating every instance. What
            # re-evaluates one instance is its own patch: patch.diff, or given_patch.sha256.
            # the instance's image, pulled ahead (rules/images.smk)
            **({"image": f"{RUN}/instances/{{id}}/image.json"} if PULLS else {}),
            predictions=ancient(f"{RUN}/{{sample}}predictions.jsonl"),
            patch=f"{RUN}/instances/{{id}}/{{sample}}{'given_patch.sha256' if config['predictions'] else PATCH}",
        output:
            f"{RUN}/instances/{{id}}/{{sample}}evaluation.json",
        log:
            f"{RUN}/logs/{{id}}/{{sample}}evaluate.log",
        # longest first: the instance's longest earlier evaluation, of any run here (scripts/records.py)
        priority: evaluation_priority
        group:
            "evaluate"  # on a cluster, one job with the validation and the pull (rules/paths.smk)
        resources:
            docker=1 if config["evaluation"] == "docker" else 0,
        params:
            backend=config["evaluation"],
            # the image: another source is another evaluation
            source=lambda wildcards: IMAGE_SOURCE,  # a function: the template's braces are no wildcards
            # the image's record: its pull's, or with images built locally the validation's that built it
            image_record=lambda wildcards, input: (
                f"--image-record {shlex.quote(input.image if PULLS else input.validation)}"
                if PULLS or config["validate_gold"]
                else ""
            ),
            sample=lambda wildcards: f"--sample {sample_number(wildcards.sample)} --samples {SAMPLES}",
            # names the harness's containers: each sample its own (sample 1 as with one sample)
            run_id=lambda wildcards: DERIVED["run_id"]
            + (f".s{sample_number(wildcards.sample)}" if wildcards.sample else ""),
            # Settings that change no verdict already given are no rerun trigger (scripts/snakemake_patches.py).
            settings=snakemake_patches.untracked(
                f"--timeout {config['eval_timeout']}"
                + (" --keep-images" if config["keep_images"] else "")
                + f" --min-free-disk-gb {config['min_free_disk_gb']} --pull-wait {config['pull_wait']}"
                + f" --dataset {shlex.quote(config['dataset'])} --split {shlex.quote(config['split'])}",
                SNAKEMAKE_PATCHES,
            ),
        run:
            # `shell: "python -m ... > {log} 2>&1"`, forked from a process that imported the harness once
            forked.run_command(
                snakemake_format(
                    "python -m scripts.evaluate instance --backend {params.backend} --instances {input.instances:q}"
                    " --index {input.index:q} --predictions {input.predictions:q} --id {wildcards.id:q}"
                    " --run-id {params.run_id:q} {params.source} {params.image_record} {params.sample}"
                    " {params.settings} --out {output:q}"
                ),
                log[0],
            )

    rule evaluation:
        input:
            instances=INSTANCES,
            predictions=f"{RUN}/{{sample}}predictions.jsonl",
            reports=merged_reports,
        output:
            f"{RUN}/{{sample}}evaluation.json",
        log:
            f"{RUN}/logs/{{sample}}evaluation.log",
        localrule: True
        params:
            run_dir=lambda wildcards, output: str(Path(output[0]).parents[wildcards.sample.count("/")]),
            backend=config["evaluation"],
            sample=lambda wildcards: sample_number(wildcards.sample),
        shell:
            "python -m scripts.evaluate merge --instances {input.instances:q} --predictions {input.predictions:q}"
            " --run-dir {params.run_dir:q} --backend {params.backend} --sample {params.sample}"
            " --out {output:q} 2> >(tee {log:q} >&2)"
