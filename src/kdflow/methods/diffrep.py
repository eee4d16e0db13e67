"""diffrep: progressive feature distillation by re-parameterising the diffusion reverse process, a
documented RECONSTRUCTION of Yao, Lu, Zhang, Zhang, Zhao, Yu, "Progressively Knowledge Distillation
via Re-parameterizing Diffusion Reverse Process", AAAI 2024 (38(15):16425-16432). The paper's full
text and code are not public; never report this as a reproduction of its numbers.

    s_1..s_K = the K branches of the student's layer              (kdflow.models.reparam)
    y_k      = s_pi(1) + ... + s_pi(k)                            pi: a fresh random order each step
    x_k      = sqrt(abar_k) * t + sqrt(1 - abar_k) * xi           abar_K = 1, so x_K = t
    loss     = ce_weight * CE + feat_weight * mean_k MSE(g(y_k), x_k)

From the abstract (verified): an L2 feature loss fits the teacher feature in one jump, which fails
when the teacher-student gap is large; the transfer is instead split into small parts optimised
progressively, as a diffusion model's reverse process goes from noise to data step by step; the
reverse steps are played by several student features made by structural re-parameterisation, and
those are combined linearly, so at inference they fold into one layer at no cost. From a secondary
summary (not verified): a shuffle assigns student features to steps at random, so no feature
dominates ("shuffle sampling"); the last stage is the best place; more features help; extra
branches without teacher supervision do not.

Our choices (the parts a reader of the paper might find done otherwise):
- Where: the student's last block (`student_layer` picks another) against the teacher's last
  block, as FitNets' hint (kdflow.methods.fitnets) but at the last stage. The block's linear layer
  and its BatchNorm become K branches, conv + BN, 1x1 conv + BN, identity + BN where shapes allow
  (RepVGG/DBB; Linear + BN for MLP students); after training they are folded back, so the saved
  student is the scratch architecture (kdflow.models.reparam; DistillSetup.final_student checks).
- The reverse chain: the running sums y_k of the branch features, in the shuffled order; y_K is
  the whole layer's output (before the block's residual sum and activation), the feature the
  folded student computes, so its step is FitNets' loss at that layer.
- The targets: DDPM's forward process from the teacher feature, x_k = sqrt(abar) t + sqrt(1-abar)
  xi, with the cosine schedule (Nichol & Dhariwal 2021, s = 0.008) at times (K - k) / K, and xi
  Gaussian noise (default) or, with `student_start`, the student's own mapped feature g(y_K)
  (detached): a bridge from the student to the teacher as DiffKD's noise adapter makes one.
- The connector g: FitNets' regressor (conv + BN + ReLU to the teacher's shape) applied to all K
  running sums in one batch, so its BatchNorm keeps their differences of scale.
- The defaults: FitNets' (RepDistiller scripts/run_cifar_distill.sh `-b 100`, the baseline the
  paper's claim is measured against), K = 4.
- Not built: "target guided diffusion training" (the summary names it without saying what it is).
The no-supervision control of the ablation is this method with `feat_weight: 0`: the same
branches, trained by the labels alone, folded the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, Param, combine, weights
from kdflow.methods.fitnets import regressor
from kdflow.models import reparam


def cosine_abar(k: int, s: float = 0.008) -> torch.Tensor:
    """abar at the K reverse steps' times (K - k) / K, k = 1..K: the last is 1 (the teacher)."""
    times = torch.arange(k - 1, -1, -1, dtype=torch.float64) / k

    def f(t: torch.Tensor) -> torch.Tensor:
        return torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    return (f(times) / f(torch.zeros(()))).float()


class DiffRep(Method):
    name = "diffrep"
    paper = "Yao et al., AAAI 2024 (reconstruction: no public text or code)"
    source = "none public; defaults from RepDistiller scripts/run_cifar_distill.sh (FitNets -b 100)"
    params = {
        **weights(100.0, 1.0, 1000.0),
        "branches": Param(4, valid=(2, 64), doc="K: parallel branches of the student layer = reverse steps"),
        "student_start": Param(False, doc="the schedule starts from the student's feature, not noise"),
        "shuffle": Param(True, doc="a fresh random order of branches to steps at every step"),
    }
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "last"
    reshapes_student = True
    reconstruction = (
        "Yao et al. (AAAI 2024) publish neither full text nor code. From the abstract: the transfer is "
        "split into small steps optimised progressively, as a diffusion reverse process; the steps are "
        "student features made by structural re-parameterisation, combined linearly and folded into "
        "one layer for inference. From an unverified secondary summary: branches are assigned to steps "
        "in a random order (shuffle). kdflow's choices: the layer (the student's last block, its conv "
        "+ BN as K RepVGG-style branches), the chain (running sums of branch features), the targets "
        "(DDPM's forward process from the teacher feature, cosine schedule at times (K-k)/K, noise or "
        "the student's feature as the start), FitNets' connector and loss weight, K = 4. "
        "'Target guided diffusion training' is not built."
    )

    def layers(self, s_names: list[str], t_names: list[str], hp: dict) -> tuple[list[str], list[str]]:
        (s,), t = super().layers(s_names, t_names, hp)
        return [s.removesuffix("_pre") + "_pre"], t  # the branches' sum is the block before activation

    @staticmethod
    def _block(s_layers: list[str]) -> int:
        return int(s_layers[0].removeprefix("block").removesuffix("_pre"))

    def prepare_student(self, student: nn.Module, s_layers: list[str], hp: dict) -> None:
        reparam.branch(student, self._block(s_layers), int(hp["branches"]))

    def student_features(self, student: nn.Module, s_layers: list[str]) -> dict[str, torch.Tensor]:
        holder, key, _ = student.rep_target(self._block(s_layers))
        return {"branches": torch.stack(getattr(holder, key).outputs)}  # (K, B, *feature shape)

    def final_student(self, student: nn.Module, s_layers: list[str], hp: dict) -> nn.Module:
        return reparam.fold(student, self._block(s_layers))

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        (s_shape,), (t_shape,) = s_shapes.values(), t_shapes.values()
        return nn.ModuleDict({"connector": regressor(s_shape, t_shape)})

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        if hp["feat_weight"] == 0:  # the control: branches without teacher supervision
            return combine(b, hp, None)
        t = next(iter(b.t_feats.values()))
        return combine(b, hp, progressive_loss(b.s_feats["branches"], t, modules["connector"], hp))


def progressive_loss(branches: torch.Tensor, t: torch.Tensor, connector: nn.Module, hp: dict) -> torch.Tensor:
    """mean over the K steps of MSE(g(y_k), x_k); `branches` (K, B, ...), `t` the teacher's (B, ...)."""
    k, batch = branches.shape[:2]
    order = (
        torch.randperm(k, device=branches.device)
        if hp["shuffle"]
        else torch.arange(k, device=branches.device)
    )
    running = branches[order].cumsum(0)  # y_1 .. y_K
    mapped = connector(running.flatten(0, 1)).float().view(k, batch, *t.shape[1:])
    t = t.float()
    abar = cosine_abar(k).to(t.device).view(k, 1, *[1] * (t.dim() - 1))
    xi = mapped[-1].detach() if hp["student_start"] else torch.randn_like(t)
    targets = abar.sqrt() * t + (1 - abar).sqrt() * xi  # (K, B, ...)
    return ((mapped - targets) ** 2).mean()
