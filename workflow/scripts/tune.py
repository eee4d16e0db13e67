"""Optuna study of (T, alpha) for one edge on the validation split."""

from pathlib import Path

from kdflow.jobs import TeacherRef, tune
from kdflow.smk import (
    data_ref,
    edge_job_info,
    job_log,
    pruner_config,
    search_space,
    tracking_spec,
    train_config,
)

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    teacher, student = sm.wildcards.teacher, sm.wildcards.student
    seed = sm.config["tuning"]["seed"]
    tune(
        data=data_ref(sm.config, sm.input.data),
        spec=sm.params.spec,
        cfg=train_config(sm.config, seed, student),
        info=edge_job_info(sm.config, sm.rule, teacher, student, seed),
        teacher=TeacherRef(Path(sm.input.teacher_logits), Path(sm.input.teacher_fit)),
        space=search_space(sm.config),
        n_trials=sm.config["tuning"]["n_trials"],
        parallel_trials=sm.config["tuning"]["parallel_trials"],
        pruner=pruner_config(sm.config, student),
        journal=Path(sm.params.journal),
        out_params=Path(sm.output.best),
        out_trials=Path(sm.output.trials),
        tracking=tracking_spec(sm.config),
    )
