"""One worker of an edge's Optuna study: trials until the study is full (tune_worker of the task's
tuning jobs: kdflow.pipeline.tasks)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log
from kdflow.pipeline.tasks import tuning

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    study, jobs = tuning(sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, True)
    jobs.tune_worker(
        study,
        Path(sm.input.run),
        worker=int(sm.wildcards.worker),
        n_workers=sm.config["tuning"]["workers"],
        parallel_trials=sm.config["tuning"]["parallel_trials"],
        out=Path(sm.output[0]),
    )
