# With validate_gold=true: each instance's environment checked by its gold patch and an empty patch, once per
# image for all runs (scripts/validate.py; the cache is validation_cache).
if config["validate_gold"]:
    from snakemake.utils import format as snakemake_format

    from scripts import forked

    rule validate:
        input:
            **selection_inputs(),
            # the instance's image, pulled ahead (rules/images.smk): its record gives the digest
            **({"image": f"{RUN}/instances/{{id}}/image.json"} if PULLS else {}),
        output:
            f"{RUN}/instances/{{id}}/validation.json",
        log:
            f"{RUN}/logs/{{id}}/validate.log",
        priority: evaluation_priority
        group:
            "evaluate"  # on a cluster, one job with the evaluations, and the pull (rules/paths.smk)
        resources:
            docker=1,
        params:
            run_id=DERIVED["run_id"],
            cache=config["validation_cache"],
            # the image validated: the evaluation's
            source=lambda wildcards: IMAGE_SOURCE,  # a function: the template's braces are no wildcards
            image_record=lambda wildcards, input: f"--image-record {shlex.quote(input.image)}" if PULLS else "",
            settings=snakemake_patches.untracked(
                f"--timeout {config['eval_timeout']}"
                + f" --min-free-disk-gb {config['min_free_disk_gb']} --pull-wait {config['pull_wait']}",
                SNAKEMAKE_PATCHES,
            ),
        run:
            # `shell: "python -m ... > {log} 2>&1"`, forked from a process that imported the harness once
            forked.run_command(
                snakemake_format(
                    "python -m scripts.validate --instances {input.instances:q} --index {input.index:q}"
                    " --id {wildcards.id:q} --run-id {params.run_id:q} --cache {params.cache:q}"
                    " {params.source} {params.image_record} {params.settings} --out {output:q}"
                ),
                log[0],
            )
