"""One worker of an edge's Optuna study: trials until the study is full
(kdflow.pipeline.tune_jobs.tune_worker; kdflow.dgm.tune for task generative)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    args = (sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, True)
    worker, n_workers = int(sm.wildcards.worker), sm.config["tuning"]["workers"]
    if sm.config["task"] == "generative":
        from kdflow.dgm.smk import gen_study
        from kdflow.dgm.tune import tune_worker

        tune_worker(
            gen_study(*args), Path(sm.input.run), worker=worker, n_workers=n_workers, out=Path(sm.output[0])
        )
    else:
        from kdflow.pipeline.smk import tuning_study
        from kdflow.pipeline.tune_jobs import tune_worker

        tune_worker(
            tuning_study(*args),
            Path(sm.input.run),
            worker=worker,
            n_workers=n_workers,
            parallel_trials=sm.config["tuning"]["parallel_trials"],
            out=Path(sm.output[0]),
        )
