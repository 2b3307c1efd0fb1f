# With batch=true one job asks every instance still without an answer through the provider's
# batch API (scripts/batch.py); each generate job then writes its response.json from that answer.
if BATCH_DONE:

    rule batch:
        input:
            **({"estimate": ancient(ESTIMATE)} if ESTIMATE else {}),
            prompts=per_instance("prompt.json"),
            # no batch before the run's cost estimate is made and accepted (a model with a price has one)
        output:
            BATCH_DONE,
        log:
            f"{RUN}/logs/batch.log",
        localrule: True
        run:
            from scripts import batch

            batch.run(
                RUN, instance_ids(input.prompts), **batch_settings(), out_path=output[0], log=batch.job_log(log[0])
            )
