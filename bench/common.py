"""What the benchmarks share: their MNIST-1D splits, CIFAR-shaped synthetic image splits, the
reference KD loop, the figure formatter, and the tuning benchmarks' edge, options and trial context.

from bench.common import mnist1d_splits, cifar_like_splits, reference_fit, mmm
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from kdflow import data
from kdflow.data import Split
from kdflow.data.splits import channel_stats
from kdflow.engine import TrainConfig, fit, make_optimizer, make_scheduler, scratch_objective
from kdflow.models import Classifier, build_model

DATA = Path(__file__).parent / "out" / "mnist1d.npz"  # generated on first use (~1 s); git ignores out/
T, ALPHA = 4.0, 0.9  # the pipeline's default KD temperature and soft-term weight
# The edge the tuning benchmarks study: the default config's teacher and student.
TEACHER = {"family": "cnn1d", "channels": 64, "layers": 3}
STUDENT = {"family": "cnn1d", "channels": 8, "layers": 2}


def mnist1d_splits() -> tuple[Split, Split]:
    """The train and val splits the pipeline uses (generation seed 42, 20 % val, split seed 0)."""
    if not DATA.exists():
        data.save_raw(data.load_mnist1d(None, 42), DATA)
    return data.load_split(DATA, "train", 0.2, 0), data.load_split(DATA, "val", 0.2, 0)


def cifar_like_splits(n_train: int, n_val: int, classes: int = 100, seed: int = 0) -> tuple[Split, Split]:
    """Random uint8 32x32x3 images with random labels (no signal: for timing only), stored as kdflow
    stores CIFAR: uint8 (N, 3, 32, 32), normalised by the training part's channel statistics."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_val, 3, 32, 32), dtype=np.uint8)
    y = torch.from_numpy(rng.integers(0, classes, n_train + n_val))
    mean, std = channel_stats(x[:n_train])
    x = torch.from_numpy(x)
    return (
        Split(x[:n_train], y[:n_train], mean, std),
        Split(x[n_train:], y[n_train:], mean, std),
    )


def reference_fit(student, teacher, train: Split, val: Split, cfg: TrainConfig) -> float:
    """The loop KD projects use today (the official TAKD script, RepDistiller): a DataLoader over a
    TensorDataset of host tensors, each batch moved to `cfg.device`, the frozen teacher's forward on
    every batch, `loss.item()` every step, a DataLoader pass over val each epoch. Returns the last
    epoch's validation accuracy."""
    device = cfg.device
    g = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(TensorDataset(train.x, train.y), batch_size=cfg.batch_size, shuffle=True, generator=g)
    val_loader = DataLoader(TensorDataset(val.x, val.y), batch_size=cfg.batch_size)
    student, teacher = student.to(device), teacher.to(device).eval()
    opt = make_optimizer(student.parameters(), cfg)
    sched = make_scheduler(opt, cfg)
    acc = 0.0
    for _ in range(cfg.epochs):
        student.train()
        running = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            with torch.no_grad():
                t_logits = teacher(xb)
            s_logits = student(xb)
            soft = F.kl_div(F.log_softmax(s_logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean")
            loss = (1 - ALPHA) * F.cross_entropy(s_logits, yb) + ALPHA * T * T * soft
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
        sched.step()
        student.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in val_loader:
                correct += (student(xb.to(device)).argmax(1) == yb.to(device)).sum().item()
        acc = correct / len(val)
    return acc


def mmm(values: list[float], fmt: str = ",.0f") -> str:
    """'median (min-max)' of repeated measurements."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def study_parser(description: str, trials: int) -> argparse.ArgumentParser:
    """The options of the tuning benchmarks: --quick, --trials, --epochs, --reps."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=trials)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    return ap


def study_size(args: argparse.Namespace, quick_epochs: int) -> tuple[int, int, int]:
    """(trials, epochs, repetitions): as given, or 4 trials x `quick_epochs` once with --quick."""
    return (4, quick_epochs, 1) if args.quick else (args.trials, args.epochs, args.reps)


def trained_teacher(train: Split, val: Split, spec: dict = TEACHER, epochs: int = 40) -> Classifier:
    """A teacher trained from labels (seed 0; by default TEACHER for 40 epochs, as the tuning
    benchmarks' edge starts)."""
    torch.manual_seed(0)
    teacher = build_model(spec, (40,), 10)
    fit(teacher, train, val, TrainConfig(epochs=epochs, seed=0), scratch_objective())
    return teacher


def kd_trial_context(teacher_logits, train: Split, val: Split, cfg: TrainConfig, journal: str = "j"):
    """The TrialContext of the tuning benchmarks' edge distilled by kd: STUDENT, cached teacher
    logits (None: a variant that runs the teacher itself), kd's untuned values, tracking off."""
    # Imported here: bench.gpu imports this module where Optuna is not installed (section 4).
    from kdflow.distillation import DistillSetup
    from kdflow.methods import METHODS
    from kdflow.tracking import TrackingSpec
    from kdflow.trials import TrialContext
    from kdflow.tuning import KD_SPACE

    kd = METHODS["kd"]
    fixed = {k: v for k, v in kd.resolve().items() if k not in KD_SPACE}
    setup = DistillSetup.build(kd, kd.resolve(), STUDENT, (40,), 10, None, train, teacher_logits)
    off = TrackingSpec(False, "", "bench", "")
    return TrialContext(setup, fixed, None, train, val, cfg, off, {}, None, "tune/bench", journal)
