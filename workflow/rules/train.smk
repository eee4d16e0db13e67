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
        snapshots=lambda wc: plan.snapshot_epochs(config, wc.model),  # epochs kept for snapshot teachers
    script:
        "../scripts/train.py"


rule ensemble:
    input:
        unpack(get_ensemble_members),
        data=get_data_file(),
        tracking=get_tracking_marker(),
    output:
        model=f"{TRAIN_DIR}/model.pt",
        fit=f"{TRAIN_DIR}/fit.json",
    log:
        f"{RESULTS}/logs/ensemble/{{model}}/seed{{seed}}.log",
    wildcard_constraints:
        model=one_of(plan.ensembles(config)),
    conda:
        CONDA_ENV
    threads: 1
    params:
        combine=lambda wc: config["models"][wc.model].get("combine", "prob"),
        members=lambda wc: plan.members(config, wc.model, wc.seed),  # a rerun trigger
    script:
        "../scripts/ensemble.py"


rule snapshot:
    input:
        unpack(get_snapshot_source),
        tracking=get_tracking_marker(),
    output:
        model=f"{TRAIN_DIR}/model.pt",
        fit=f"{TRAIN_DIR}/fit.json",
    log:
        f"{RESULTS}/logs/snapshot/{{model}}/seed{{seed}}.log",
    wildcard_constraints:
        model=one_of(plan.snapshots(config)),
    conda:
        CONDA_ENV
    threads: 1
    params:
        epoch=lambda wc: plan.snapshots(config)[wc.model][1],
    script:
        "../scripts/snapshot.py"


rule pretrain:
    input:
        unpack(get_teacher),
        data=get_data_file(),
    output:
        f"{PRETRAIN_DIR}/pretrain.pt",
    log:
        f"{RESULTS}/logs/pretrain/{{method}}/{{lineage}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{method}}/{{lineage}}/seed{{seed}}.tsv"
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
        "../scripts/pretrain.py"


rule distill:
    input:
        unpack(get_teacher),
        unpack(get_tuned_params_file),
        unpack(get_pretrain_file),
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
        settings=lambda wc: get_training_settings(plan.student(wc.lineage)),  # a rerun trigger, as in train
        method=get_method,
    script:
        "../scripts/distill.py"


rule cache_logits:
    input:
        unpack(get_model_files),
        data=get_data_file(),
    output:
        f"{RESULTS}/{{kind}}/{{run}}/seed{{seed}}/logits.pt",
    log:
        f"{RESULTS}/logs/cache_logits/{{kind}}/{{run}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    threads: 1
    script:
        "../scripts/cache_logits.py"
