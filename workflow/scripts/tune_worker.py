"""One worker of an edge's Optuna study: trials until the study is full
(kdflow.pipeline.tune_jobs.tune_worker)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log, tuning_study
from kdflow.pipeline.tune_jobs import tune_worker

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    study = tuning_study(sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, True)
    tune_worker(
        study,
        Path(sm.input.run),
        worker=int(sm.wildcards.worker),
        n_workers=sm.config["tuning"]["workers"],
        parallel_trials=sm.config["tuning"]["parallel_trials"],
        out=Path(sm.output[0]),
    )
