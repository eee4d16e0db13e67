"""Create one edge's Optuna study and its MLflow tuning run (kdflow.pipeline.tune_jobs.start_tuning;
kdflow.dgm.tune for task generative)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    args = (sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, False)
    if sm.config["task"] == "generative":
        from kdflow.dgm.smk import gen_study
        from kdflow.dgm.tune import start_tuning

        start_tuning(gen_study(*args), Path(sm.output.run))
    else:
        from kdflow.pipeline.smk import tuning_study
        from kdflow.pipeline.tune_jobs import start_tuning

        start_tuning(tuning_study(*args), Path(sm.output.run))
