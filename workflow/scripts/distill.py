"""Distil one edge teacher -> student (an assistant or the student), with tuned or fixed T/alpha."""

from pathlib import Path

from kdflow.atomic import read_json
from kdflow.jobs import TeacherRef, train
from kdflow.smk import checkpoint_every_s, data_ref, edge_job_info, job_log, tracking_spec, train_config

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    teacher, student, seed = sm.wildcards.teacher, sm.wildcards.student, sm.wildcards.seed
    tuned = sm.input.get("kd_params")  # absent when tuning is off: fixed kd.temperature/alpha
    kd = read_json(tuned) if tuned else sm.params.kd
    train(
        data=data_ref(sm.config, sm.input.data),
        spec=sm.params.spec,
        cfg=train_config(sm.config, seed, student),
        info=edge_job_info(sm.config, sm.rule, teacher, student, seed),
        out_dir=Path(sm.output.model).parent,
        tracking=tracking_spec(sm.config),
        teacher=TeacherRef(Path(sm.input.teacher_logits), Path(sm.input.teacher_fit)),
        kd_params=kd,
        resolved_config=sm.config,
        checkpoint_every_s=checkpoint_every_s(),
    )
