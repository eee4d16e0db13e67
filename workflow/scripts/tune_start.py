"""Create one edge's Optuna study and its MLflow tuning run (start_tuning of the task's tuning
jobs: kdflow.pipeline.tasks)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log
from kdflow.pipeline.tasks import tuning

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    study, jobs = tuning(sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, False)
    jobs.start_tuning(study, Path(sm.output.run))
