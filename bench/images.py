"""kdflow's engine against a RepDistiller-style training loop on CIFAR-shaped images, side by side.

    .venv/bin/python -m bench.images                      # CPU: 2 pairs x 3 repetitions, ~4 min on 2 cores
    .venv/bin/python -m bench.images --quick              # CPU, tiny, 1 repetition: checks the code path
    PYTHONPATH=src python3 -m bench.images --device cuda --json out.json   # GPU: ~3 min (estimated)

Pairs (RepDistiller's CIFAR-100 architectures, kdflow.models.cifar): resnet56 -> resnet20 and
resnet32x4 -> resnet8x4, 100 classes, on random uint8 32x32x3 images with random labels (fixed
seed; no signal, so the accuracies printed only show that both loops ran). The teachers are freshly
initialised, not trained: their weights do not change what a step costs. Both loops train with
RepDistiller's CIFAR-100 settings (config/recipes/repdistiller_cifar100.yaml): SGD lr 0.05, momentum
0.9 without Nesterov, weight decay 5e-4, x0.1 at epochs 150/180/210 (not reached here), batch 64,
KD with T = 4, CE x 0.1 + KD x 0.9, random crop 4 + horizontal flip, validation every epoch.

  reference  the structure of RepDistiller's train_student.py: a torch Dataset over HWC uint8 images
             whose __getitem__ makes a PIL image and applies per-sample CPU transforms
             (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize): torchvision's
             where `import torchvision` works, else the same steps written out on PIL (numpy where
             PIL is missing too; the run prints which); a DataLoader with --workers processes,
             shuffled, pin_memory on CUDA; each batch copied to the device; the student's forward,
             then the frozen teacher's (eval, no_grad), in their order; KL at T times T^2 (sum / batch);
             loss.item() and top-1/top-5 every step (their AverageMeter); torch.optim.SGD; a
             validation DataLoader (batch 32, --workers // 2 processes) each epoch. On CUDA with
             cudnn.benchmark on, as train_student.py sets it.
  kdflow     `engine.fit` with augment_crop=4, augment_flip=True and `live_kd_objective` (the teacher
             runs on every augmented batch too, before the student): the uint8 images copied to the
             device once (inside the timed fit), crop and flip batched on the device, one host sync
             per epoch. On CUDA also with bf16 autocast, channels_last, cuDNN autotuning, and
             torch.compile (of the student; ~15-40 s per pair, paid once in the untimed warm-up;
             --no-compile drops it).

Same student initialisation, data, epochs and seed for both; the data order and augmentation draws
differ (the DataLoader's shuffle against kdflow's seeded permutation). samples/s = training samples x
epochs / wall seconds of the whole fit, the validation passes INCLUDED for both. Repetitions are
interleaved; each variant first runs an untimed warm-up fit on two batches (CUDA context, cuDNN,
compilation). On CPU both loops' main process runs one thread (torch.set_num_threads(1), as a
Snakemake job with threads: 1); the reference's DataLoader workers are extra processes of one thread
each, so with 2 workers it uses more cores than kdflow does. On CPU the reference also runs with 0
workers (its transforms in the main process), which separates the workers' cost from the loop's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bench.common import ALPHA, T, cifar_like_splits, mmm
from bench.gpu import sync
from kdflow.data import Split
from kdflow.engine import TrainConfig, fit, live_kd_objective, make_optimizer, make_scheduler
from kdflow.models import build_model, count_parameters

try:  # RepDistiller's items are PIL images; the fallback transform works on arrays where PIL is missing
    from PIL import Image, ImageOps
except ImportError:
    Image = ImageOps = None

PAIRS = [("resnet56", "resnet20"), ("resnet32x4", "resnet8x4")]
SHAPE, CLASSES = (3, 32, 32), 100
CROP = 4


@dataclass(frozen=True)
class Size:
    n_train: int  # a multiple of the batch: no short last batch, so compiled shapes stay static
    n_val: int
    epochs: int
    reps: int


# CPU: ~6 ms per sample-step for resnet56 -> resnet20 and ~18 ms for resnet32x4 -> resnet8x4 on one thread.
SIZES = {
    ("cpu", False): Size(512, 128, 2, 3),
    ("cpu", True): Size(128, 64, 1, 1),
    ("cuda", False): Size(20480, 2048, 1, 3),
    ("cuda", True): Size(2048, 512, 1, 1),
}


@dataclass(frozen=True)
class Variant:
    loop: str  # "reference" | "kdflow"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    workers: int | None = None  # the reference's DataLoader workers; None: --workers

    @property
    def name(self) -> str:
        flags = [("channels_last", self.channels_last), ("compile", self.compile)]
        flags.append(("cudnn.benchmark", self.cudnn_benchmark))
        flags.append((f"{self.workers} workers", self.workers is not None))
        return " ".join([self.loop, self.precision] + [f for f, on in flags if on])


def variants(cuda: bool, compiled: bool) -> list[Variant]:
    # bf16 and channels_last are GPU levers; torch.compile does not pay on CPU (docs/benchmarks.md).
    # On 2 cores the workers compete with the main process: without them the data are loaded in it.
    if not cuda:
        return [Variant("reference"), Variant("reference", workers=0), Variant("kdflow")]
    out = [
        Variant("reference", cudnn_benchmark=True),  # train_student.py: cudnn.benchmark = True
        Variant("kdflow"),
        Variant("kdflow", "bf16"),
        Variant("kdflow", "bf16", channels_last=True),
        Variant("kdflow", "bf16", channels_last=True, cudnn_benchmark=True),
    ]
    if compiled:
        out.append(Variant("kdflow", "bf16", channels_last=True, compile=True))
    return out


# ---- the reference: RepDistiller's data pipeline and loop -------------------------------------


class PerSampleTransform:
    """torchvision's RandomCrop(32, padding=crop) (zero fill), RandomHorizontalFlip(), ToTensor(),
    Normalize(mean, std), written out on one PIL image (an HWC uint8 array where PIL is missing),
    drawing from torch's RNG as torchvision does (each DataLoader worker seeds its own)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, crop: int, flip: bool, pil: bool):
        self.mean, self.std, self.crop, self.flip, self.pil = mean, std, crop, flip, pil

    def __call__(self, img):
        if self.crop:
            i, j = (int(v) for v in torch.randint(0, 2 * self.crop + 1, (2,)))
            if self.pil:
                img = ImageOps.expand(img, border=self.crop, fill=0).crop((j, i, j + 32, i + 32))
            else:
                c = self.crop
                img = np.pad(img, ((c, c), (c, c), (0, 0)))[i : i + 32, j : j + 32]
        if self.flip and torch.rand(1) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.pil else img[:, ::-1]
        x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        return x.float().div(255).sub_(self.mean).div_(self.std)  # ToTensor, then Normalize


def reference_transforms(split: Split) -> tuple[object, object, bool, str]:
    """(train transform, test transform, whether items are PIL images, what was used)."""
    mean, std = split.mean, split.std
    try:
        from torchvision import __version__, transforms
    except Exception as e:  # not installed, or a wheel built for another torch (OSError, RuntimeError)
        why = f"{type(e).__name__}: {e}".splitlines()[0][:120]
        pil = Image is not None
        what = f"PIL {Image.__version__}" if pil else "numpy (no PIL)"
        train = PerSampleTransform(mean, std, CROP, True, pil)
        test = PerSampleTransform(mean, std, 0, False, pil)
        return train, test, pil, f"per-sample {what} fallback (torchvision unusable: {why})"
    norm = [transforms.ToTensor(), transforms.Normalize(mean.flatten().tolist(), std.flatten().tolist())]
    augment = [transforms.RandomCrop(32, padding=CROP), transforms.RandomHorizontalFlip()]
    return transforms.Compose(augment + norm), transforms.Compose(norm), True, f"torchvision {__version__}"


class ImageDataset(Dataset):
    """RepDistiller's CIFAR100Instance: HWC uint8 images; an item is (transform(PIL image), label, index)."""

    def __init__(self, hwc: np.ndarray, y: list[int], transform, pil: bool):
        self.x, self.y, self.transform, self.pil = hwc, y, transform, pil

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.x[i]) if self.pil else self.x[i]
        return self.transform(img), self.y[i], i


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """RepDistiller's `accuracy` (as counts): on the device, no host sync."""
    hit = logits.topk(max(ks), 1).indices.t().eq(y[None])  # (k, B)
    return [hit[:k].float().sum() for k in ks]


def reference_fit(student, teacher, train: Dataset, val: Dataset, cfg: TrainConfig, workers: int) -> float:
    """RepDistiller's train_distill + validate for --distill kd -r 0.1 -a 0.9. Returns the last val top-1."""
    device = cfg.device
    pin = torch.device(device).type == "cuda"
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, num_workers=workers, pin_memory=pin)
    val_loader = DataLoader(val, batch_size=cfg.batch_size // 2, num_workers=workers // 2, pin_memory=pin)
    student.to(device)
    opt = make_optimizer(student.parameters(), cfg)  # torch.optim.SGD(lr, momentum=0.9, weight_decay)
    sched = make_scheduler(opt, cfg)
    acc = 0.0
    for _ in range(cfg.epochs):
        student.train()
        teacher.eval()
        loss_sum, top1, top5, n = 0.0, 0.0, 0.0, 0
        for xb, yb, _ in loader:
            xb, yb = xb.float().to(device), yb.to(device)
            logit_s = student(xb)
            with torch.no_grad():
                logit_t = teacher(xb)
            p_s, p_t = F.log_softmax(logit_s / T, 1), F.softmax(logit_t / T, 1)
            kl = F.kl_div(p_s, p_t, reduction="sum") * T**2 / len(xb)  # their DistillKL
            loss = (1 - ALPHA) * F.cross_entropy(logit_s, yb) + ALPHA * kl
            c1, c5 = topk_correct(logit_s, yb)
            loss_sum += loss.item() * len(xb)  # AverageMeter.update(loss.item(), n): a sync per step
            top1, top5, n = top1 + c1, top5 + c5, n + len(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        student.eval()
        with torch.no_grad():
            correct, seen = 0.0, 0
            for xb, yb, _ in val_loader:
                xb, yb = xb.float().to(device), yb.to(device)
                out = student(xb)
                F.cross_entropy(out, yb).item()  # their validate's AverageMeter
                correct += topk_correct(out, yb)[0]
                seen += len(xb)
        acc = float(correct) / seen
    return acc


# ---- kdflow -------------------------------------------------------------------------------


def kdflow_fit(student, teacher, train: Split, val: Split, cfg: TrainConfig) -> float:
    result = fit(student, train, val, cfg, live_kd_objective(teacher, T, ALPHA))
    return result.history[-1]["val_acc"]


# ---- one timed run --------------------------------------------------------------------------


@contextmanager
def cudnn_benchmark(on: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def run(v: Variant, student_name: str, teacher, data: dict, cfg: TrainConfig, workers: int):
    """(wall seconds, last val accuracy) of one fit of a fresh student."""
    torch.manual_seed(cfg.seed)
    student = build_model({"family": student_name}, SHAPE, CLASSES)
    teacher.to(memory_format=torch.channels_last if v.channels_last else torch.contiguous_format)
    cfg = replace(cfg, precision=v.precision, channels_last=v.channels_last, compile=v.compile)
    with cudnn_benchmark(v.cudnn_benchmark):
        sync(cfg.device)
        start = time.perf_counter()
        if v.loop == "reference":
            workers = workers if v.workers is None else v.workers
            acc = reference_fit(student, teacher, data["ref_train"], data["ref_val"], cfg, workers)
        else:
            acc = kdflow_fit(student, teacher, data["train"], data["val"], cfg)
        sync(cfg.device)
    return time.perf_counter() - start, acc


def reference_data(train: Split, val: Split, batch: int) -> tuple[dict, dict, str]:
    """The reference's datasets for the full splits and for a two-batch warm-up."""
    t_train, t_test, pil, what = reference_transforms(train)

    def datasets(n_train: int, n_val: int) -> dict:
        hwc = lambda s, n: s.x[:n].permute(0, 2, 3, 1).contiguous().numpy()  # noqa: E731 (as CIFAR's .data)
        return {
            "ref_train": ImageDataset(hwc(train, n_train), train.y[:n_train].tolist(), t_train, pil),
            "ref_val": ImageDataset(hwc(val, n_val), val.y[:n_val].tolist(), t_test, pil),
            "train": train.head(n_train),
            "val": val.head(n_val),
        }

    return datasets(len(train), len(val)), datasets(2 * batch, batch), what


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition: checks the code path")
    ap.add_argument("--reps", type=int, help="repetitions (default: 3; 1 with --quick)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--n-train", type=int, help="training images (a multiple of 64)")
    ap.add_argument("--workers", type=int, help="the reference's DataLoader workers (default 2; 8 on CUDA)")
    ap.add_argument("--no-compile", action="store_true", help="CUDA: drop the torch.compile variant")
    ap.add_argument("--json", help="also write every measurement to this file")
    args = ap.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu to check the code path")
        return 2
    size = SIZES[("cuda" if cuda else "cpu", args.quick)]
    n_train, epochs = args.n_train or size.n_train, args.epochs or size.epochs
    reps = args.reps or size.reps
    workers = args.workers if args.workers is not None else (8 if cuda else 2)
    if not cuda:
        torch.set_num_threads(1)
    cfg = TrainConfig(
        epochs=epochs, batch_size=64, lr=0.05, optimizer="sgd", nesterov=False, weight_decay=5e-4,
        scheduler="multistep", milestones=(150, 180, 210), augment_crop=CROP, augment_flip=True,
        seed=0, device=args.device,
    )  # fmt: skip
    train, val = cifar_like_splits(n_train, size.n_val, CLASSES)
    full, warm, transforms_used = reference_data(train, val, cfg.batch_size)
    all_variants = variants(cuda, not args.no_compile)

    name = torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} thread(s) in the main"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"reference transforms: {transforms_used}; DataLoader workers {workers} (val {workers // 2})")
    print(
        f"{n_train:,} training images x {epochs} epoch(s), {size.n_val:,} val, batch {cfg.batch_size}, "
        f"{reps} repetition(s) interleaved; samples/s = training samples x epochs / fit seconds, "
        "validation included for both\n",
        flush=True,
    )
    raw, summary = [], []
    for t_name, s_name in PAIRS:
        torch.manual_seed(0)
        teacher = build_model({"family": t_name}, SHAPE, CLASSES).to(args.device).eval()
        n_t = count_parameters(teacher)
        n_s = count_parameters(build_model({"family": s_name}, SHAPE, CLASSES))
        title = f"{t_name} ({n_t:,}) -> {s_name} ({n_s:,})"
        warmup = {}
        for v in all_variants:  # untimed: CUDA context, cuDNN handles, compilation, torch.optim's import
            warmup[v] = run(v, s_name, teacher, warm, replace(cfg, epochs=1), workers)[0]
            print(f"{title} warm-up {v.name}: {warmup[v]:.1f} s", flush=True)
        runs = {v: [] for v in all_variants}
        for rep in range(1, reps + 1):  # interleaved, so drifts in the machine's state hit all alike
            for v in all_variants:
                seconds, acc = run(v, s_name, teacher, full, cfg, workers)
                rate = n_train * epochs / seconds
                runs[v].append(rate)
                raw.append({"pair": [t_name, s_name], "variant": asdict(v), "rep": rep, "seconds": seconds,
                            "samples_per_s": rate, "val_acc": acc, "warmup_s": warmup[v]})  # fmt: skip
                print(f"{title} rep {rep} {v.name}: {rate:,.0f} samples/s ({seconds:.1f} s)", flush=True)
        ref = statistics.median(runs[all_variants[0]])
        rows = []
        for v, rates in runs.items():
            med = statistics.median(rates)
            rows.append(
                f"| {v.name} | {mmm(rates)} | {1000 * cfg.batch_size / med:.1f} | {med / ref:.2f}x "
                f"| {warmup[v]:.1f} |"
            )
            if v.loop == "kdflow":
                against = [(r.name, med / statistics.median(runs[r])) for r in runs if r.loop == "reference"]
                summary.append(f"{title}, {v.name}: " + ", ".join(f"{x:.2f}x {r}" for r, x in against))
        print(f"\n{title}")
        print("| loop | samples/s median (min-max) | ms/step | x reference | warm-up s |")
        print("|---|---:|---:|---:|---:|")
        print("\n".join(rows) + "\n", flush=True)
        if args.json:  # after each pair: a run cut short keeps what it measured
            with open(args.json, "w") as f:
                meta = {"device": name, "torch": torch.__version__, "transforms": transforms_used,
                        "workers": workers, "n_train": n_train, "n_val": size.n_val, "epochs": epochs,
                        "batch": cfg.batch_size, "validation_included": True}  # fmt: skip
                json.dump({**meta, "runs": raw}, f, indent=1)
    print("ratios of medians (kdflow / each reference, samples/s):")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
