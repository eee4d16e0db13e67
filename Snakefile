"""kdflow: teacher -> assistants -> student knowledge distillation as a Snakemake DAG.

snakemake --cores all                                  # default MNIST-1D experiment
snakemake --cores all --configfile config/examples/no_assistants.yaml
snakemake --report results/report.html                 # after a run
"""

from snakemake.utils import min_version

min_version("9.0")


# A --configfile is used alone (its omitted keys take the schema defaults), never deep-merged
# over config/config.yaml: merging would silently mix model specs of two experiments.
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/tune.smk"


# The same DAG shape for both tasks; a generative experiment's models train, are evaluated and
# are reported by their own rules (kdflow.dgm).
if config["task"] == "generative":

    include: "workflow/rules/generative.smk"

else:

    include: "workflow/rules/train.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
