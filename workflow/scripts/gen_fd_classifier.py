"""The classifier whose features the Fréchet distance of generative models compares
(kdflow.dgm.jobs.fd_classifier)."""

from pathlib import Path

from kdflow.dgm.jobs import fd_classifier
from kdflow.pipeline.smk import data_ref, job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    result = fd_classifier(data=data_ref(sm.config, sm.input.data), out=Path(sm.output[0]))
    print(f"validation accuracy {result['val_acc']:.4f}")
