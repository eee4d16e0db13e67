"""Create one edge's Optuna study and its MLflow tuning run (kdflow.pipeline.tune_jobs.start_tuning)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log, tuning_study
from kdflow.pipeline.tune_jobs import start_tuning

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    study = tuning_study(sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, False)
    start_tuning(study, Path(sm.output.run))
