"""The report: pairs x methods (mean ± std over seeds), paired differences from kd, plots."""

from pathlib import Path

from kdflow.pipeline.smk import job_log, method_rows, published, tracking_spec
from kdflow.report import write_report

sm = snakemake  # noqa: F821
with job_log(sm.log[0]):
    write_report(
        metric_files=[Path(p) for p in sm.input.metrics],
        trial_files=[Path(p) for p in sm.input.trials],
        pairs=list(sm.params.pairs),
        methods=list(sm.params.methods),
        summary=Path(sm.output.summary),
        markdown=Path(sm.output.markdown),
        accuracy_plot=Path(sm.output.accuracy),
        deltas_plot=Path(sm.output.deltas),
        tuning_plot=Path(sm.output.tuning),
        experiment=sm.config["experiment"],
        tracking=tracking_spec(sm.config),
        method_rows=method_rows(sm.config),
        sweeps=sm.config["sweeps"],
        sweep_plots=[Path(p) for p in sm.output.sweeps],
        published=published(sm.config),
    )
