# task: generative (kdflow.dgm.jobs): the classification DAG's shape with generative models.
# train trains a teacher or a student alone by its ELBO, distill distils a student from its teacher
# without data, evaluate scores a model on the test split (NLL, MMD, classifier-feature Fréchet
# distance against the features of fd_classifier), report writes the NLL tables and sample grids.
# Tuning is tune.smk's three rules, whose scripts run kdflow.dgm.tune for this task.


rule train:
    input:
        data=get_data_file(),
        tracking=get_tracking_marker(),
    output:
        model=f"{TRAIN_DIR}/model.pt",
        fit=f"{TRAIN_DIR}/fit.json",
        history=f"{TRAIN_DIR}/history.parquet",
    log:
        f"{RESULTS}/logs/train/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}/seed{{seed}}.tsv"
    wildcard_constraints:
        model=one_of(plan.trained_models(config)),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        spec=lambda wc: config["models"][wc.model],
        settings=lambda wc: get_training_settings(wc.model),  # a rerun trigger; the script reads config
        generative=config["generative"],
    script:
        "../scripts/gen_train.py"


rule distill:
    input:
        unpack(get_teacher),
        unpack(get_tuned_params_file),
        data=get_data_file(),
        tracking=get_tracking_marker(),
    output:
        model=f"{DISTILL_DIR}/model.pt",
        fit=f"{DISTILL_DIR}/fit.json",
        history=f"{DISTILL_DIR}/history.parquet",
    log:
        f"{RESULTS}/logs/distill/{{method}}/{{lineage}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/distill/{{method}}/{{lineage}}/seed{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        spec=lambda wc: config["models"][plan.student(wc.lineage)],
        settings=lambda wc: get_training_settings(plan.student(wc.lineage)),  # a rerun trigger
        method=get_method,
    script:
        "../scripts/gen_distill.py"


rule fd_classifier:
    input:
        data=get_data_file(),
    output:
        f"{RESULTS}/fd_classifier.pt",
    log:
        f"{RESULTS}/logs/fd_classifier.log",
    conda:
        CONDA_ENV
    threads: 1
    script:
        "../scripts/gen_fd_classifier.py"


rule evaluate:
    input:
        unpack(get_model_files),
        unpack(get_fd_classifier),
        data=get_data_file(),
        tracking=get_tracking_marker(),
    output:
        metrics=f"{RESULTS}/{{kind}}/{{run}}/seed{{seed}}/test_metrics.json",
        samples=f"{RESULTS}/{{kind}}/{{run}}/seed{{seed}}/samples.npy",
    log:
        f"{RESULTS}/logs/evaluate/{{kind}}/{{run}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        generative=config["generative"],
    script:
        "../scripts/gen_evaluate.py"


rule report:
    input:
        metrics=get_test_metrics(),
        samples=[f"{d}/samples.npy" for d in get_all_model_dirs()],
        trials=get_tuning_results(),
        continual=get_continual_results(),
    output:
        summary=f"{RESULTS}/summary.parquet",
        markdown=f"{RESULTS}/report.md",
        nll=report(
            f"{RESULTS}/plots/test_nll.png",
            caption="../report/test_nll.rst",
            category="Results",
        ),
        grids=[f"{RESULTS}/plots/samples_{i}.png" for i in range(len(config["pairs"]))],
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        CONDA_ENV
    params:
        pairs=get_pair_lineages(),
        methods=get_method_names(),
    script:
        "../scripts/gen_report.py"


rule continual:
    input:
        data=get_data_file(),
    output:
        f"{RESULTS}/continual/seed{{seed}}.json",
    log:
        f"{RESULTS}/logs/continual/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/continual/seed{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        continual=config["continual"],  # a rerun trigger
        settings=lambda wc: get_training_settings(config["continual"]["model"]),
    script:
        "../scripts/gen_continual.py"
