"""The malformed-config corpus (tests/configs/bad/) through real `snakemake --cores 1` runs.

Each file names, in comments, the key its refusal must name (`# key:`) and a phrase of what the
message says is allowed (`# says:`). Every run must exit non-zero before any job starts, print that
message, and write nothing: no results/ or resources/, nothing beside the config in its directory.
"""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = sorted((REPO / "tests" / "configs" / "bad").glob("*.yaml"))
SNAKEMAKE_STATE = ".snakemake"  # Snakemake's own bookkeeping, created before the Snakefile is read


def expectation(path: Path) -> tuple[str, str]:
    text = path.read_text()
    key, says = (re.search(rf"^# {k}: (.+)$", text, re.M) for k in ("key", "says"))
    assert key and says, f"{path.name} must say '# key:' and '# says:'"
    return key.group(1).strip(), says.group(1).strip()


def run_snakemake(config: Path, workdir: Path) -> subprocess.CompletedProcess:
    workdir.mkdir()
    (workdir / "blocker").write_text("a regular file where a results directory would go\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(config), "--cores", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_corpus_is_large_and_covers_every_kind():
    assert len(CORPUS) >= 30
    keys = [expectation(p)[0] for p in CORPUS]
    levels = {k.rsplit(".", 1)[0] for p, k in zip(CORPUS, keys) if p.name.startswith("unknown_key_")}
    assert len(levels) >= 10  # unknown keys at every level of the schema
    needed_keys = ("seeds", "dataset.root", "results_dir", "tracking.uri", "dataset.name")
    for needed in (*needed_keys, "pairs[1].assistants[0]", "methods[1]", "methods[0].params.student_layer"):
        assert needed in keys, needed


@pytest.mark.slow
def test_every_malformed_config_is_refused_before_any_job(tmp_path):
    def one(path):
        return path, run_snakemake(path, tmp_path / path.stem)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores; each run is ~2 s of Python start-up
        results = list(pool.map(one, CORPUS))

    failures = []
    for path, proc in results:
        key, says = expectation(path)
        out = proc.stdout + proc.stderr
        written = sorted(
            str(p.relative_to(tmp_path / path.stem))
            for p in (tmp_path / path.stem).rglob("*")
            if p.name != "blocker" and SNAKEMAKE_STATE not in p.relative_to(tmp_path / path.stem).parts
        )
        problems = [
            "exit code 0" if proc.returncode == 0 else "",
            "" if f"config key '{key}'" in out else f"does not name '{key}'",
            "" if says in out else f"does not say '{says}'",
            "" if "ConfigError" in out else "not refused by the config check",
            f"wrote {written}" if written else "",
            "ran a job" if re.search(r"^(local)?rule \w+:", out, re.M) else "",
        ]
        if any(problems):
            failures.append(f"{path.name}: {'; '.join(p for p in problems if p)}\n{out[-800:]}")
    assert not failures, "\n\n".join(failures)
