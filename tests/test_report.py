"""The report on hand-made rows: table cells, paired intervals and plots against hand computation."""

import math
from statistics import mean, stdev

import pandas as pd
import pytest

from kdflow import report
from kdflow.atomic import write_json
from kdflow.tracking import TrackingSpec

PAIRS = ["big__small", "big__mid__small"]
METHODS = ["kd", "dkd", "kd_ls"]
# test accuracy per (method, lineage) and seed; kd_ls on big__small lost its seed 2
ACC = {
    ("scratch", "big"): [0.90, 0.92, 0.91],
    ("scratch", "small"): [0.60, 0.62, 0.58],
    ("kd", "big__small"): [0.65, 0.66, 0.64],
    ("dkd", "big__small"): [0.67, 0.69, 0.65],
    ("kd_ls", "big__small"): [0.70, 0.71],
    ("kd", "big__mid"): [0.80, 0.81, 0.79],
    ("dkd", "big__mid"): [0.82, 0.80, 0.81],
    ("kd_ls", "big__mid"): [0.78, 0.79, 0.80],
    ("kd", "big__mid__small"): [0.66, 0.68, 0.67],
    ("dkd", "big__mid__small"): [0.64, 0.69, 0.66],
    ("kd_ls", "big__mid__small"): [0.63, 0.64, 0.62],
}
PARAMS = {"big": 45_000, "mid": 3_000, "small": 1_200}
HP = {
    "kd": {"temperature": 4.0, "alpha": 0.9},
    "dkd": {"alpha": 1.0, "beta": 8.0},
    "kd_ls": {"alpha": "auto"},
}


def make_rows(acc=ACC) -> list[dict]:
    rows = []
    for (method, lineage), values in acc.items():
        model = lineage.split("__")[-1]
        for seed, a in enumerate(values):
            row = {
                "model": model,
                "method": method,
                "lineage": lineage,
                "seed": seed,
                "test_acc": a,
                "test_nll": 1 - a,
                "test_ece": 0.01 * (seed + 1),
                "num_params": PARAMS[model],
                "throughput": 1e6 / PARAMS[model],
                "teacher_agreement": None if method == "scratch" else a + 0.05,
                "best_val_acc": a + 0.01,
            }
            rows.append({**row, **HP.get(method, {})})
    return rows


def write_rows(tmp_path, rows) -> list:
    files = []
    for i, row in enumerate(rows):
        files.append(tmp_path / "metrics" / f"{i}.json")
        write_json(files[-1], row)
    return files


def test_a_cell_is_the_mean_and_std_over_its_seeds_and_the_best_method_is_bold():
    rows = pd.DataFrame(make_rows())
    table = report.summarize(rows, PAIRS, METHODS)
    cell = table.set_index(["pair", "row"])
    for pair in PAIRS:
        assert cell.loc[(pair, "teacher"), "test_acc_mean"] == pytest.approx(mean(ACC["scratch", "big"]))
        assert cell.loc[(pair, "student (scratch)"), "test_acc_mean"] == pytest.approx(
            mean(ACC["scratch", "small"])
        )
        for m in METHODS:
            assert cell.loc[(pair, m), "test_acc_mean"] == pytest.approx(mean(ACC[m, pair]))
            assert cell.loc[(pair, m), "test_acc_std"] == pytest.approx(stdev(ACC[m, pair]))
    # The assistant's rows (big__mid) are no pair's cell.
    assert len(table) == len(PAIRS) * (2 + len(METHODS))

    text = report.accuracy_markdown(table, PAIRS, METHODS, n_seeds=3)
    assert text.splitlines()[0] == "| | big → small | big → mid → small |"
    lines = {line.split(" | ")[0]: line for line in text.splitlines()}
    kd = ACC["kd", "big__mid__small"]
    assert f"**{100 * mean(kd):.2f} ± {100 * stdev(kd):.2f}**" in lines["| kd"]  # best of that column
    kd_ls = ACC["kd_ls", "big__small"]
    assert f"**{100 * mean(kd_ls):.2f} ± {100 * stdev(kd_ls):.2f} (n=2)**" in lines["| kd_ls"]
    assert text.count("**") == 2 * len(PAIRS)  # one best per column; teacher and scratch never bold


@pytest.mark.parametrize(
    ("df", "t"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (30, 2.042)]
)
def test_the_t_quantile_matches_the_tables(df, t):
    assert report.t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)


def test_the_t_quantile_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 17, 60, 200):
        for p in (0.9, 0.975, 0.995):
            assert report.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_a_methods_difference_from_kd_is_paired_by_seed_with_a_t_interval():
    rows = pd.DataFrame(make_rows())
    deltas = report.paired_deltas(rows, PAIRS, METHODS).set_index(["pair", "method"])
    assert "kd" not in deltas.index.get_level_values("method")

    # dkd on big__small, three seeds, by hand: differences 2, 3, 1 points
    d = [100 * (a - b) for a, b in zip(ACC["dkd", "big__small"], ACC["kd", "big__small"])]
    half = 4.303 * stdev(d) / math.sqrt(3)
    r = deltas.loc["big__small", "dkd"]
    assert r.n == 3 and r["mean"] == pytest.approx(2.0)
    assert (r.lo, r.hi) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-3)

    # kd_ls on big__small has seeds 0 and 1 only: paired on those two, df = 1
    r = deltas.loc["big__small", "kd_ls"]
    d = [100 * (a - b) for a, b in zip(ACC["kd_ls", "big__small"], ACC["kd", "big__small"])]
    assert r.n == 2 and r["mean"] == pytest.approx(mean(d))
    assert r.hi - r["mean"] == pytest.approx(12.706 * stdev(d) / math.sqrt(2), abs=1e-3)

    text = report.deltas_markdown(deltas.reset_index(), PAIRS)
    assert f"| dkd | +2.00 [{2 - half:+.2f}, {2 + half:+.2f}] (n=3) |" in text


def trial_files(tmp_path) -> list:
    """Two studies of different methods: their tuned columns differ."""
    files = []
    for method, edge, hp in (
        ("kd", "big__small", {"temperature": [2.0, 8.0, 4.0], "alpha": [0.5, 0.9, 0.7]}),
        ("dkd", "big__mid", {"beta": [1.0, 8.0, 4.0]}),
    ):
        path = tmp_path / "tune" / method / edge / "trials.parquet"
        path.parent.mkdir(parents=True)
        frame = pd.DataFrame(
            {
                "trial": [0, 1, 2],
                "state": ["COMPLETE", "COMPLETE", "PRUNED"],
                "val_acc": [0.6, 0.7, 0.5],
                "epochs_run": [10, 10, 3],
                "pruned_reason": ["", "", "pruned"],
                **hp,
            }
        )
        frame.to_parquet(path)
        files.append(path)
    return files


def report_paths(tmp_path) -> dict:
    plots = tmp_path / "plots"
    return {
        "summary": tmp_path / "summary.parquet",
        "markdown": tmp_path / "report.md",
        "accuracy_plot": plots / "accuracy_vs_params.png",
        "deltas_plot": plots / "difference_from_kd.png",
        "tuning_plot": plots / "tuning.png",
    }


def test_the_report_writes_every_row_the_tables_and_the_plots(tmp_path):
    rows = make_rows()
    paths = report_paths(tmp_path)
    report.write_report(
        metric_files=write_rows(tmp_path, rows),
        trial_files=trial_files(tmp_path),
        pairs=PAIRS,
        methods=METHODS,
        experiment="e",
        tracking=TrackingSpec(False, "sqlite:///unused.db", "e", None),
        **paths,
    )
    summary = pd.read_parquet(paths["summary"])
    assert len(summary) == len(rows)
    assert set(summary.alpha.dropna()) == {"0.9", "1.0", "auto"}  # mixed types kept, as text
    for key in ("accuracy_plot", "deltas_plot", "tuning_plot"):
        assert paths[key].read_bytes().startswith(b"\x89PNG")
    text = paths["markdown"].read_text()
    assert "## Difference from kd" in text and "difference_from_kd.png" in text
    assert "| kd | big → small | 2 / 1 / 0 | temperature=8, alpha=0.9 | 70.00 |" in text
    assert "| dkd | big → mid | 2 / 1 / 0 | beta=8 | 70.00 |" in text
    assert "| big → mid → small | kd | small |" in text  # the second table, per cell


def test_without_kd_the_report_says_so_instead_of_comparing(tmp_path):
    acc = {k: v for k, v in ACC.items() if k[0] != "kd"}
    paths = report_paths(tmp_path)
    report.write_report(
        metric_files=write_rows(tmp_path, make_rows(acc)),
        trial_files=[],
        pairs=PAIRS,
        methods=["dkd", "kd_ls"],
        experiment="e",
        tracking=TrackingSpec(False, "sqlite:///unused.db", "e", None),
        **paths,
    )
    text = paths["markdown"].read_text()
    assert "`kd`, the method the others are compared with, is not among" in text
    assert "[" not in text.split("## Difference from kd")[1].split("##")[0]  # no interval table
    assert "Tuning was off" in text
    assert paths["deltas_plot"].read_bytes().startswith(b"\x89PNG")  # a rule output: still written


def test_a_row_restricted_to_some_pairs_leaves_the_others_empty_in_every_table():
    only_first = {k: v for k, v in ACC.items() if k != ("kd_ls", "big__mid__small")}
    rows = pd.DataFrame(make_rows(only_first))
    table = report.summarize(rows, PAIRS, METHODS)
    main = report.accuracy_markdown(table, PAIRS, METHODS, 3).splitlines()
    assert next(line for line in main if line.startswith("| kd_ls |")).endswith("| - |")
    metrics = report.metrics_markdown(table)
    assert "| big → mid → small | kd_ls |" not in metrics and "| big → small | kd_ls |" in metrics


def test_the_methods_section_names_each_rows_source_and_what_a_reconstruction_chose():
    from kdflow.pipeline.smk import method_rows

    config = {
        "pairs": [{"teacher": "t", "student": "s"}],
        "methods": ["kd", {"method": "diffrep", "name": "diffrep8", "params": {"branches": 8}}],
    }
    rows = method_rows(config)
    assert [(r["row"], r["method"], r["params"]) for r in rows] == [
        ("kd", "kd", {}),
        ("diffrep8", "diffrep", {"branches": 8}),
    ]
    text = report.methods_markdown(rows)
    assert "| kd | kd | Hinton et al., NIPS workshop 2015 |" in text
    assert "| diffrep8 | diffrep | Yao et al., AAAI 2024" in text and "| branches=8 |" in text
    assert text.count("is a reconstruction.") == 1  # diffrep's note, once; kd is from its authors' code
    assert "not built" in text.split("**diffrep is a reconstruction.**")[1]


def test_a_capacity_gap_sweep_orders_teachers_by_size_with_their_students_by_hand():
    rows = pd.DataFrame(
        [
            {"model": m, "method": "scratch", "lineage": m, "seed": s, "test_acc": a, "num_params": p}
            for m, p, accs in [("big", 900, [0.9, 0.8]), ("small", 100, [0.6, 0.7]), ("s", 10, [0.3, 0.5])]
            for s, a in enumerate(accs)
        ]
        + [
            {"model": "s", "method": "kd", "lineage": f"{t}__s", "seed": s, "test_acc": a, "num_params": 10}
            for t, accs in [("big", [0.4, 0.6]), ("small", [0.5, 0.6])]
            for s, a in enumerate(accs)
        ]
    )
    table = report.sweep_table(rows, "s", ["big", "small"], ["kd"])
    assert list(table.teacher) == ["small", "big"]  # by parameter count, not the order given
    assert list(table.params) == [100, 900]
    assert table.kd_mean.tolist() == pytest.approx([0.55, 0.5])
    assert table.kd_std.tolist() == pytest.approx([stdev([0.5, 0.6]), stdev([0.4, 0.6])])
    assert table.teacher_mean.tolist() == pytest.approx([0.65, 0.85])
    assert table.attrs["scratch"] == pytest.approx((0.4, stdev([0.3, 0.5])))
    text = report.sweep_markdown(table, "s", ["kd"])
    assert "| small | 100 | 65.00 ± 7.07 | 55.00 ± 7.07 |" in text and "40.00 ± 14.14" in text


def test_sweeps_add_their_pairs_once_and_name_an_undefined_model():
    from kdflow.config import ConfigError, check_config

    models = {n: {"family": "mlp", "hidden": [4]} for n in ("t1", "t2", "t3", "s")}
    c = check_config({"models": models, "sweeps": [{"student": "s", "teachers": ["t1", "t2", "t3"]}]})
    assert [(p["teacher"], p["student"]) for p in c["pairs"]] == [("t1", "s"), ("t2", "s"), ("t3", "s")]
    declared = {"models": models, "pairs": [{"teacher": "t2", "student": "s"}]}
    c = check_config({**declared, "sweeps": [{"student": "s", "teachers": ["t1", "t2"]}]})
    assert [p["teacher"] for p in c["pairs"]] == ["t2", "t1"]  # t2 -> s was declared: not twice
    with pytest.raises(ConfigError, match=r"config key 'sweeps\[0\].teachers\[1\]': model 't9'"):
        check_config({"models": models, "sweeps": [{"student": "s", "teachers": ["t1", "t9"]}]})


def test_published_numbers_sit_beside_the_measured_ones_with_their_source_and_difference(tmp_path):
    published = {
        "values": {"big__small": {"teacher": 91.5, "student": 59.0, "kd": 66.25}},
        "sources": {"kd": "RepDistiller README (last epoch)"},
        "note": "Theirs: best test epoch.",
    }
    table = report.summarize(pd.DataFrame(make_rows()), PAIRS, METHODS)
    text = report.published_markdown(table, published["values"], published["sources"])
    lines = text.splitlines()
    kd = ACC["kd", "big__small"]
    want = f"{100 * mean(kd):.2f} ± {100 * stdev(kd):.2f} | 66.25 | {100 * mean(kd) - 66.25:+.2f}"
    assert f"| big → small | kd | {want} | RepDistiller README (last epoch) |" in lines
    scratch = ACC["scratch", "small"]
    measured = f"{100 * mean(scratch):.2f} ± {100 * stdev(scratch):.2f}"
    assert f"| big → small | student (scratch) | {measured} | 59.00 | " in text
    assert len(lines) == 2 + 3  # header, rule, one line per published number
    paths = report_paths(tmp_path)
    report.write_report(
        metric_files=write_rows(tmp_path, make_rows()),
        trial_files=trial_files(tmp_path),
        pairs=PAIRS,
        methods=METHODS,
        experiment="e",
        tracking=TrackingSpec(False, "sqlite:///unused.db", "e", None),
        published=published,
        **paths,
    )
    md = paths["markdown"].read_text()
    assert "## Published numbers beside ours" in md and "Theirs: best test epoch." in md and text in md
