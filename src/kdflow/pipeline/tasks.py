"""The tuning jobs of the config's task, for the tune_* scripts: one place that tells the tasks apart.

    study, jobs = tuning(config, rule, method, lineage, paths, on_device)
    jobs.start_tuning(study, out) / jobs.tune_worker(study, run_file, ...) / jobs.select_best(...)

Classification's study and jobs are kdflow.pipeline.smk.tuning_study and kdflow.pipeline.tune_jobs;
`task: generative`'s are kdflow.dgm.smk.gen_study and kdflow.dgm.tune (imported only when used).
"""

from __future__ import annotations

from types import ModuleType


def tuning(
    config: dict, rule: str, method: str, lineage: str, paths, on_device: bool
) -> tuple[object, ModuleType]:
    """An edge's study as its jobs see it, and the module of the three jobs that run it."""
    if config["task"] == "generative":
        from kdflow.dgm import smk, tune

        return smk.gen_study(config, rule, method, lineage, paths, on_device), tune
    from kdflow.pipeline import smk, tune_jobs

    return smk.tuning_study(config, rule, method, lineage, paths, on_device), tune_jobs
