"""The training loop: determinism, exact resume after a kill, divergence, stored-file safety."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdflow.checkpoint import CorruptFileError, load_checkpoint, load_model, save_model
from kdflow.engine import (
    Callback,
    DivergenceError,
    TrainConfig,
    fit,
    kd_objective,
    live_kd_objective,
    predict_logits,
    scratch_objective,
)
from kdflow.models import build_model

SPEC = {"family": "cnn1d", "channels": 8, "layers": 2, "dropout": 0.2}  # dropout: RNG state matters
CFG = TrainConfig(epochs=6, batch_size=64, seed=0)


def new_model():
    torch.manual_seed(0)
    return build_model(SPEC, (40,), 10)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class StopAt(Callback):
    """Simulates a job killed right after epoch `epoch`'s checkpoint was written."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_fit_is_deterministic_and_learns(small_splits):
    train, val = small_splits
    a = fit(new_model(), train, val, CFG, scratch_objective())
    b = fit(new_model(), train, val, CFG, scratch_objective())
    assert_same_weights(weights(a.model), weights(b.model))
    assert a.history == b.history
    assert a.best_val_acc > 0.2  # ten classes: chance is 0.1; 600 samples, 6 epochs
    assert a.best_epoch == max(range(1, 7), key=lambda e: (a.history[e - 1]["val_acc"], -e))


@pytest.mark.parametrize("stop_epoch", [1, 3, 5])
def test_resume_after_interruption_gives_identical_weights(small_splits, tmp_path, stop_epoch):
    train, val = small_splits
    straight = fit(new_model(), train, val, CFG, scratch_objective())
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(
            new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, callbacks=[StopAt(stop_epoch)]
        )
    assert load_checkpoint(ckpt)["epoch"] == stop_epoch
    resumed = fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt)
    assert_same_weights(weights(straight.model), weights(resumed.model))
    assert resumed.history == straight.history


KILL_SCRIPT = """
import sys, torch
from kdflow import data
from kdflow.engine import TrainConfig, fit, scratch_objective
from kdflow.models import build_model
train = data.load_split(sys.argv[1], "train", 0.2, 0)
val = data.load_split(sys.argv[1], "val", 0.2, 0)
torch.manual_seed(0)
m = build_model({"family": "cnn1d", "channels": 16, "layers": 2, "dropout": 0.2}, (40,), 10)
r = fit(m, train, val, TrainConfig(epochs=int(sys.argv[3]), seed=0), scratch_objective(),
        checkpoint=__import__("pathlib").Path(sys.argv[2]))
torch.save(r.model.state_dict(), sys.argv[2] + ".final")
"""


def test_sigkill_mid_fit_then_rerun_equals_uninterrupted(mnist1d_file, tmp_path):
    """A real process killed with SIGKILL (no cleanup) resumes to the same weights."""
    script = tmp_path / "fit.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torch_threads = ["-c", f"import torch; torch.set_num_threads(1); exec(open({str(script)!r}).read())"]
    epochs = "12"

    ref = tmp_path / "ref.pt"
    subprocess.run([sys.executable, *torch_threads, str(mnist1d_file), str(ref), epochs], check=True, env=env)

    ckpt = tmp_path / "killed.pt"
    proc = subprocess.Popen([sys.executable, *torch_threads, str(mnist1d_file), str(ckpt), epochs], env=env)
    deadline = time.time() + 120
    while not ckpt.exists() or load_checkpoint(ckpt)["epoch"] < 3:
        assert time.time() < deadline and proc.poll() is None, "fit ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["epoch"]
    assert 3 <= killed_at < 12
    subprocess.run(
        [sys.executable, *torch_threads, str(mnist1d_file), str(ckpt), epochs], check=True, env=env
    )

    a = torch.load(str(ref) + ".final", weights_only=True)
    b = torch.load(str(ckpt) + ".final", weights_only=True)
    assert_same_weights(a, b)


def test_checkpoints_are_spaced_by_time_and_the_last_epoch_is_always_saved(small_splits, tmp_path):
    train, val = small_splits
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 3: nothing saved yet (interval 1 h)
        fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, callbacks=[StopAt(3)],
            checkpoint_every_s=3600)  # fmt: skip
    assert not ckpt.exists()
    straight = fit(
        new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, checkpoint_every_s=3600
    )
    assert load_checkpoint(ckpt)["epoch"] == CFG.epochs
    resumed = fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, checkpoint_every_s=3600)
    assert_same_weights(weights(straight.model), weights(resumed.model))


def test_checkpoint_of_another_configuration_is_not_resumed(small_splits, tmp_path):
    train, val = small_splits
    ckpt = tmp_path / "ckpt.pt"
    fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, run_key="lr-a")
    other = TrainConfig(epochs=6, batch_size=64, seed=0, lr=1e-3)
    fresh = fit(new_model(), train, val, other, scratch_objective())
    reused = fit(new_model(), train, val, other, scratch_objective(), checkpoint=ckpt, run_key="lr-a")
    assert_same_weights(weights(fresh.model), weights(reused.model))


def test_divergence_names_stage_and_epoch(small_splits):
    train, val = small_splits
    cfg = TrainConfig(epochs=3, batch_size=64, seed=0, lr=1e6, optimizer="sgd")
    with pytest.raises(DivergenceError, match=r"distill/t__s/seed0: .* at epoch 1"):
        fit(new_model(), train, val, cfg, scratch_objective(), stage="distill/t__s/seed0")


def test_cached_teacher_logits_equal_a_live_teacher_in_eval_mode(small_splits):
    train, val = small_splits
    teacher = fit(new_model(), train, val, TrainConfig(epochs=2, batch_size=64), scratch_objective()).model
    cached = predict_logits(teacher, train.x)
    assert not teacher.training
    live = live_kd_objective(teacher, 4.0, 0.5)
    idx = torch.arange(10, 30)
    student = build_model({"family": "mlp", "hidden": [16]}, (40,), 10)
    a = kd_objective(cached, 4.0, 0.5)(student, train.x[idx], train.y[idx], idx, 1)
    b = live(student, train.x[idx], train.y[idx], idx, 1)
    assert torch.allclose(a["loss"], b["loss"])


def test_corrupt_and_tampered_model_files_are_refused(tmp_path):
    model = new_model()
    path = tmp_path / "model.pt"
    sha = save_model(path, model, SPEC, (40,), 10)
    assert_same_weights(weights(load_model(path, sha)), weights(model))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="model.pt"):
        load_model(path, sha)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(CorruptFileError, match="unreadable"):
        load_model(path)


def test_bf16_autocast_and_compile_train_on_cpu(small_splits):
    """The options the GPU benchmark measures run (here on CPU) and still learn."""
    train, val = small_splits
    bf16 = fit(
        new_model(), train, val, TrainConfig(epochs=2, batch_size=64, precision="bf16"), scratch_objective()
    )
    assert bf16.best_val_acc > 0.15
    assert next(bf16.model.parameters()).dtype == torch.float32  # master weights stay fp32
    small = build_model({"family": "mlp", "hidden": [8]}, (40,), 10)
    compiled = fit(
        small, train, val, TrainConfig(epochs=1, batch_size=200, compile=True), scratch_objective()
    )
    assert compiled.history[0]["val_acc"] > 0.0 and math.isfinite(compiled.history[0]["train_loss"])


def test_job_setup_is_deterministic_without_importing_the_compiler():
    """setup() turns torch's determinism on without the ~1.5 s import of torch._inductor that
    torch.use_deterministic_algorithms does; a compiling fit then carries the switch to inductor."""
    code = (
        "import sys, torch; from kdflow.pipeline.jobs import setup; setup(1); "
        "print(torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_a_compiling_fit_sets_inductors_determinism_as_torchs(small_splits):
    import torch._inductor.config as inductor_config

    train, val = small_splits
    saved = torch.are_deterministic_algorithms_enabled(), inductor_config.deterministic
    try:
        torch._C._set_deterministic_algorithms(True)
        inductor_config.deterministic = False
        small = build_model({"family": "mlp", "hidden": [8]}, (40,), 10)
        fit(small, train, val, TrainConfig(epochs=1, batch_size=200, compile=True), scratch_objective())
        assert inductor_config.deterministic is True
    finally:
        torch.use_deterministic_algorithms(saved[0])
        inductor_config.deterministic = saved[1]


def test_a_snapshot_is_the_weights_of_its_epoch_and_survives_a_resume(small_splits, tmp_path):
    """An early-stopped teacher: the weights at the end of epoch 2 of a 6-epoch run (its schedule,
    not a 2-epoch run's) are those a run killed right after epoch 2 had, and a job killed after
    epoch 4 and resumed still returns them."""
    train, val = small_splits
    full = fit(new_model(), train, val, CFG, scratch_objective(), snapshots=[2, 5])
    assert sorted(full.snapshots) == [2, 5]
    stopped_at_2 = tmp_path / "stopped.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=stopped_at_2, callbacks=[StopAt(2)])
    killed_weights = load_checkpoint(stopped_at_2)["model"]
    assert killed_weights.keys() == full.snapshots[2].keys()
    for k, v in killed_weights.items():
        assert torch.equal(v, full.snapshots[2][k]), k
    assert any(not torch.equal(full.snapshots[2][k], full.snapshots[5][k]) for k in killed_weights)

    ckpt = tmp_path / "resumed.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, callbacks=[StopAt(4)],
            snapshots=[2, 5])  # fmt: skip
    resumed = fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, snapshots=[2, 5])
    for e in (2, 5):
        for k, v in full.snapshots[e].items():
            assert torch.equal(v, resumed.snapshots[e][k]), (e, k)
    # a checkpoint of a run that kept other epochs is not resumed (it could lack them)
    other = fit(new_model(), train, val, CFG, scratch_objective(), checkpoint=ckpt, snapshots=[3])
    assert sorted(other.snapshots) == [3] and len(other.history) == CFG.epochs
