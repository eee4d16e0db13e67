"""The generative report: test NLL per pair x method (mean ± std over seeds), sample grids."""

from pathlib import Path

from kdflow.pipeline.smk import job_log, method_rows, tracking_spec
from kdflow.report.generative import write_generative_report

sm = snakemake  # noqa: F821
with job_log(sm.log[0]):
    write_generative_report(
        metric_files=[Path(p) for p in sm.input.metrics],
        trial_files=[Path(p) for p in sm.input.trials],
        pairs=list(sm.params.pairs),
        methods=list(sm.params.methods),
        summary=Path(sm.output.summary),
        markdown=Path(sm.output.markdown),
        nll_plot=Path(sm.output.nll),
        grid_plots=[Path(p) for p in sm.output.grids],
        experiment=sm.config["experiment"],
        tracking=tracking_spec(sm.config),
        method_rows=method_rows(sm.config),
        dataset=sm.config["dataset"]["name"],
        continual_files=[Path(p) for p in sm.input.continual],
    )
