"""Compute a teacher's logits on train/val once; every tuning trial and student reuses them."""

from pathlib import Path

from kdflow.pipeline.jobs import cache_logits
from kdflow.pipeline.smk import data_ref, job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    cache_logits(
        data=data_ref(sm.config, sm.input.data),
        model_file=Path(sm.input.model),
        fit_json=Path(sm.input.fit),
        out=Path(sm.output[0]),
    )
