"""The GPU path: training, resume, model files, bf16/compile, stacked trials, slots, on a CUDA device.

    pytest -m cuda tests/test_cuda.py     # skipped, with the reason, where torch sees no CUDA device

Small synthetic tensors only (no dataset download, no MLflow or Optuna). The task is learnable: the
label is the argmax of 10 fixed random projections of a 40-d Gaussian input (chance 0.1), and those
projections, scaled, are a perfect teacher's logits. Tests that compare two computations turn TF32
off, so the two differ only by float summation order; the others keep torch's defaults.
"""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from test_engine import StopAt  # a job killed right after epoch k's checkpoint

from kdflow.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from kdflow.data import Split
from kdflow.engine import TrainConfig, fit, kd_objective, predict_logits, scratch_objective
from kdflow.models import build_model
from kdflow.stacked import fit_stacked, stack, unstack

NO_GPU = "no CUDA device: these tests check the GPU path"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]

CNN = {"family": "cnn1d", "channels": 8, "layers": 2}
MLP = {"family": "mlp", "hidden": [32]}
CFG = TrainConfig(epochs=5, batch_size=64, seed=0, device="cuda")


def task(n_train=2000, n_val=500):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, 40, generator=g)
    proj = torch.randn(40, 10, generator=g)
    y = (x @ proj).argmax(1)
    train, val = Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:])
    return train, val, 2.0 * (train.x @ proj)  # (N_train, 10) a perfect teacher's logits


def new_model(spec=CNN):
    torch.manual_seed(0)
    return build_model(spec, (40,), 10)


def cpu_state(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def deterministic_cudnn():
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def test_fit_on_cuda_learns_and_agrees_with_cpu(no_tf32):
    train, val, _ = task()
    gpu = fit(new_model(), train, val, CFG, scratch_objective())
    cpu = fit(new_model(), train, val, TrainConfig(epochs=5, batch_size=64, seed=0), scratch_objective())
    assert next(gpu.model.parameters()).is_cuda
    assert gpu.best_val_acc > 0.35  # chance is 0.1; ~0.5 on CPU
    for g, c in zip(gpu.history, cpu.history):  # same batches, same maths: only rounding differs
        assert g["train_loss"] == pytest.approx(c["train_loss"], rel=1e-3)
        assert g["val_acc"] == pytest.approx(c["val_acc"], abs=0.0061)  # three samples in 500


def test_kd_fit_on_cuda_takes_teacher_logits_from_a_cpu_cache(tmp_path):
    # jobs.train passes the logits as logits.pt loads them: on the CPU, whatever the training device.
    train, val, teacher_logits = task()
    save_checkpoint(tmp_path / "logits.pt", {"train": teacher_logits})
    cached = load_checkpoint(tmp_path / "logits.pt")["train"]
    assert not cached.is_cuda
    assert fit(new_model(), train, val, CFG, kd_objective(cached, 4.0, 0.9)).best_val_acc > 0.35


def test_checkpoint_written_on_cuda_resumes_to_the_same_weights(tmp_path, deterministic_cudnn):
    # Dropout draws from the CUDA generator: a resume must continue its sequence, not replay it.
    spec = {**CNN, "dropout": 0.3}
    train, val, _ = task()
    straight = fit(new_model(spec), train, val, CFG, scratch_objective())
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(spec), train, val, CFG, scratch_objective(), checkpoint=ckpt, callbacks=[StopAt(2)])
    assert load_checkpoint(ckpt)["epoch"] == 2
    resumed = fit(new_model(spec), train, val, CFG, scratch_objective(), checkpoint=ckpt)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    for r, s in zip(resumed.history, straight.history):
        assert r["val_acc"] == pytest.approx(s["val_acc"], abs=0.0021)  # one sample in 500
    a, b = cpu_state(straight.model), cpu_state(resumed.model)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_model_saved_from_cuda_loads_on_cpu_with_the_same_outputs(tmp_path, no_tf32):
    train, val, _ = task()
    model = fit(new_model(), train, val, TrainConfig(epochs=1, device="cuda"), scratch_objective()).model
    path = tmp_path / "model.pt"
    sha = save_model(path, model, CNN, (40,), 10)
    loaded = load_model(path, sha)
    assert all(not t.is_cuda for t in loaded.state_dict().values())
    on_gpu = predict_logits(model, val.x.cuda()).cpu()
    assert torch.allclose(predict_logits(loaded, val.x), on_gpu, rtol=1e-4, atol=1e-4)


def test_predict_logits_on_cuda_matches_cpu_with_default_precision():
    # torch's defaults: cuDNN convolutions in TF32 (10-bit mantissa), so ~1e-3 relative, not 1e-6.
    torch.manual_seed(0)
    model = build_model({"family": "resnet", "depth": 8, "width": 8}, (3, 32, 32), 10).eval()
    x = torch.randn(300, 3, 32, 32)
    cpu = predict_logits(model, x)
    gpu = predict_logits(model.cuda(), x.cuda(), batch_size=128).cpu()
    assert ((gpu - cpu).norm() / cpu.norm()).item() < 1e-2


def test_bf16_autocast_and_compile_train_on_cuda():
    train, val, teacher_logits = task()
    bf16 = fit(new_model(), train, val, replace(CFG, precision="bf16"), scratch_objective())
    assert bf16.best_val_acc > 0.35
    assert next(bf16.model.parameters()).dtype == torch.float32  # master weights stay fp32
    cfg = replace(CFG, batch_size=100, precision="bf16", compile=True)  # 100: no short last batch
    both = fit(new_model(MLP), train, val, cfg, kd_objective(teacher_logits, 4.0, 0.9))
    assert both.best_val_acc > 0.35
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in both.history)


SMALL = [{"family": "cnn1d", "channels": 4, "layers": 2}, {"family": "mlp", "hidden": [16, 8]}]


@pytest.mark.parametrize("spec", SMALL, ids=["cnn1d", "mlp"])
def test_stacked_members_on_cuda_match_each_member_alone_on_cuda(spec, no_tf32):
    train, val, teacher_logits = task()
    cfg = TrainConfig(epochs=3, batch_size=64, seed=0, device="cuda")
    temps, alphas = torch.tensor([1.5, 4.0, 10.0]), torch.tensor([0.2, 0.5, 0.9])  # on the host, as trials

    def prune_member_1(epoch, metrics, live):
        return {1: "pruned at epoch 2"} if epoch == 2 else {}

    stacked = stack([new_model(spec) for _ in range(3)])
    results = fit_stacked(stacked, train, val, cfg, teacher_logits, temps, alphas, prune_member_1)
    assert results[1].stopped == "pruned at epoch 2" and results[1].epochs_run == 2
    for k in (0, 2):
        objective = kd_objective(teacher_logits, temps[k].item(), alphas[k].item())
        alone = fit(new_model(spec), train, val, cfg, objective)
        assert results[k].stopped == "" and results[k].epochs_run == 3
        assert results[k].best_val_acc == pytest.approx(alone.best_val_acc, abs=0.0061)  # 3 samples in 500
        member = unstack(stacked, k, build_model(spec, (40,), 10).cuda())
        acc = (predict_logits(member, val.x.cuda()).argmax(1).cpu() == val.y).float().mean().item()
        assert acc == pytest.approx(alone.history[-1]["val_acc"], abs=0.0061)


# A job taking its GPU slot: CUDA must not start before CUDA_VISIBLE_DEVICES is set, or it is ignored.
SLOT_JOB = """
import json, os, sys, time, torch
from kdflow import devices
slot = devices.acquire(timeout=float(sys.argv[1]))
started_early = torch.cuda.is_initialized()
x = torch.ones(4, device="cuda")
print(json.dumps({"slot": slot, "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "early": started_early,
                  "count": torch.cuda.device_count(), "sum": x.sum().item()}), flush=True)
time.sleep(float(sys.argv[2]))
"""


def run_slot_job(env, timeout, hold=0.0, **popen):
    return subprocess.Popen(
        [sys.executable, "-c", SLOT_JOB, str(timeout), str(hold)], env=env, text=True, **popen
    )


def test_acquire_without_cuda_visible_devices_gives_torch_exactly_one_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "KDFLOW_GPU_SLOTS")}
    env["KDFLOW_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    count = "import torch; print(torch.cuda.device_count())"
    gpus = int(subprocess.check_output([sys.executable, "-c", count], env=env, text=True))
    holder = run_slot_job(env, 30, hold=60, stdout=subprocess.PIPE)
    try:
        first = json.loads(holder.stdout.readline())
        assert first == {"slot": 0, "cvd": "0", "early": False, "count": 1, "sum": 4.0}
        # While it holds slot 0, a second job takes the next GPU, or waits and times out if none.
        out, err = run_slot_job(env, 2, stdout=subprocess.PIPE, stderr=subprocess.PIPE).communicate(
            timeout=60
        )
        if gpus == 1:
            assert "TimeoutError" in err
        else:
            assert json.loads(out) == {"slot": 1, "cvd": "1", "early": False, "count": 1, "sum": 4.0}
    finally:
        holder.kill()
        holder.wait()


def image_task(n_train=512, n_val=128):
    """uint8 8x8 images whose label is the brightest of 10 fixed regions' sums (learnable)."""
    from kdflow.data.splits import channel_stats

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_val, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = x.float().mean(1).flatten(1)[:, :10].argmax(1)
    mean, std = channel_stats(x[:n_train].numpy())
    return Split(x[:n_train], y[:n_train], mean, std), Split(x[n_train:], y[n_train:], mean, std)


def test_uint8_images_augmented_on_cuda_with_a_live_teacher_resume(tmp_path, deterministic_cudnn):
    from kdflow.engine import live_kd_objective

    train, val = image_task()
    torch.manual_seed(1)
    teacher = build_model({"family": "resnet8"}, (3, 8, 8), 10).cuda()
    cfg = replace(CFG, epochs=4, augment_crop=1, augment_flip=True)

    def student():
        torch.manual_seed(0)
        return build_model({"family": "resnet8"}, (3, 8, 8), 10)

    straight = fit(student(), train, val, cfg, live_kd_objective(teacher, 4.0, 0.9))
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(
            student(),
            train,
            val,
            cfg,
            live_kd_objective(teacher, 4.0, 0.9),
            checkpoint=ckpt,
            callbacks=[StopAt(2)],
        )
    resumed = fit(student(), train, val, cfg, live_kd_objective(teacher, 4.0, 0.9), checkpoint=ckpt)
    a, b = cpu_state(straight.model), cpu_state(resumed.model)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-4), k
    # the fast options train too: bf16 autocast (the live teacher under it) and channels_last
    fast = fit(
        student(),
        train,
        val,
        replace(cfg, precision="bf16", channels_last=True),
        live_kd_objective(teacher, 4.0, 0.9),
    )
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in fast.history)


def test_generative_distillation_on_cuda_draws_its_noise_there_and_loads_on_cpu(tmp_path, no_tf32):
    """A ladder VAE teacher on the GPU, a student distilled from it without data (the teacher's
    noise drawn on the device), its model file read back on the CPU with the same generation."""
    from kdflow.dgm.families import FAMILIES
    from kdflow.dgm.jobs import load_gen_model, save_gen_model

    fam, spec = FAMILIES["lvae"], {"family": "lvae", "hidden": 32, "layers": 3, "latent": 4}
    torch.manual_seed(0)
    teacher = fam.build(spec, (40,)).cuda().requires_grad_(False)
    student = fam.build({**spec, "hidden": 8}, (40,))
    for m in fam.frozen(student, "kd4dgm"):
        m.requires_grad_(False)
    train, _ = task(n_train=512)

    def objective(m, x, y, idx, epoch):
        return {
            k: v for k, v in fam.distill["kd4dgm"](teacher, m, len(idx), {"lam": 0.1}).items() if v.dim() == 0
        }

    result = fit(student, train, None, replace(CFG, epochs=2), objective)
    assert torch.isfinite(torch.tensor(result.history[-1]["train_loss"]))
    save_gen_model(tmp_path / "s.pt", result.model, {**spec, "hidden": 8}, (40,))
    on_cpu = load_gen_model(tmp_path / "s.pt")
    eps = on_cpu.sample_noise(16)
    assert torch.allclose(
        result.model.generate([e.cuda() for e in eps]).x.cpu(), on_cpu.generate(eps).x, atol=1e-5
    )
