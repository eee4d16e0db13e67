"""What the Snakemake scripts call: the pipeline's jobs as plain functions, and the adapters to them.

    from kdflow.pipeline.jobs import train                       # one function per job
    from kdflow.pipeline.smk import data_ref, job_log, train_config

    with job_log(snakemake.log[0], snakemake.threads):
        train(data=data_ref(snakemake.config, snakemake.input.data), ...)

kdflow.pipeline.jobs holds the jobs that prepare data, train, distil, cache logits and evaluate;
kdflow.pipeline.tune_jobs the three kinds of tuning job (start, worker, select); kdflow.pipeline.smk
turns Snakemake's config, wildcards and paths into their arguments. Each workflow/scripts/*.py
unpacks `snakemake.*` and calls one function here; the training itself is in kdflow.engine.
"""
