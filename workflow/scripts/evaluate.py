"""Test-set metrics of one trained model (the only job that reads the test split)."""

from pathlib import Path

from kdflow.pipeline.jobs import evaluate
from kdflow.pipeline.smk import data_ref, job_log, tracking_spec

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    teacher_model = sm.input.get("teacher_model")  # only distilled models have one
    evaluate(
        data=data_ref(sm.config, sm.input.data),
        model_file=Path(sm.input.model),
        fit_json=Path(sm.input.fit),
        out=Path(sm.output[0]),
        tracking=tracking_spec(sm.config),
        teacher_model=Path(teacher_model) if teacher_model else None,
        teacher_fit_json=Path(sm.input.teacher_fit) if teacher_model else None,
    )
