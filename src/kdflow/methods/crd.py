"""crd: Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.

    v_s = normalize(W_s s), v_t = normalize(W_t t)        # (B, 128): penultimate features embedded
    h(v, m) = exp(v . m / tau) / Z                         # against a memory-bank entry m
    nce(v, bank) = -1/B * sum_b [ log h_pos / (h_pos + K/N)  +  sum_K log (K/N) / (h_neg + K/N) ]
    loss = ce_weight * CE(s, y) + feat_weight * ( nce(v_s, bank_t) + nce(v_t, bank_s) )

Each training sample i has one slot in a student bank and one in a teacher bank (N = n_train slots,
unit vectors). For sample i the positive is slot i and the K negatives are other slots; the student
embedding is scored against the teacher bank and the teacher embedding against the student bank
(both directions of the paper's critic). After scoring, slot i of each bank moves towards the new
embedding: m <- normalize(nce_m * m + (1 - nce_m) * v), outside autograd. Z, one per direction, is
estimated once from the first batch as mean(exp(v . m / tau)) * N and then fixed.
The terms are computed in log space, as softplus of v . m / tau - log Z - log(K/N + eps)
(`nce_loss`): criterion.py's values, eps included, to float rounding, with one softplus per element
where the direct form takes an exp, two divides and a log; with K = N - 1 the sum runs over all N
columns and nothing is drawn or gathered.

Defaults from RepDistiller (train_student.py: feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5;
crd/memory.py ContrastMemory: banks drawn uniformly in +-1/sqrt(feat_dim/3), Z set on the first
batch; crd/criterion.py ContrastLoss, eps 1e-7; scripts/run_cifar_distill.sh `--distill crd -a 0
-b 0.8`). The bank, Z and the capped K are buffers or attributes of the module, so they are saved
with it.

Negatives: RepDistiller's CIFAR loader draws K indices per sample without replacement among samples
of the other classes ("exact" mode), which needs every training label; kdflow's modules do not see
the labels, so here K are drawn without replacement uniformly among the other N - 1 samples, with
torch's global RNG (the engine checkpoints it, so a resumed run draws the same). K is capped at
N - 1: MNIST-1D's 3200 training samples are fewer than the default 16384, and with K = N - 1 every
other sample is a negative (the full NCE over the bank; nothing is drawn).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, Param, combine, weights

NCE_EPS = 1e-7  # crd/criterion.py: keeps log(h / (h + K/N)) finite


def nce_loss(
    logits: torch.Tensor, pos: torch.Tensor, log_z: torch.Tensor, negatives: torch.Tensor | None, n_data: int
) -> torch.Tensor:
    """The NCE loss of the paper's Eq. 18 with the noise distribution uniform over the N samples
    (P_n = 1/N), one direction. logits (B, N): v . m / tau against every bank slot; pos (B,): the
    same against each sample's own slot, the positive; log_z: log Z; negatives (B, K) slots, or None
    for all N - 1 other slots: then every column's negative term is summed and the positive's taken
    back.

    In log space, with h = exp(logits - log Z), c = K/N and x = logits - log Z - log(c + eps):
        log h / (h + c + eps) = -softplus(-x)
        log c / (h + c + eps) = -softplus(x) - log(1 + eps/c)
    criterion.py's terms, eps included, without forming h (an exp, a divide and a log per element);
    softplus(x) - softplus(-x) = x is the positive's swap.
    """
    k = n_data - 1 if negatives is None else negatives.shape[1]
    noise = k / n_data  # K * P_n
    shift = log_z + math.log(noise + NCE_EPS)
    x_pos = pos - shift  # (B,)
    if negatives is None:
        total = F.softplus(logits - shift).sum() - x_pos.sum()
    else:
        total = F.softplus(logits.gather(1, negatives) - shift).sum() + F.softplus(-x_pos).sum()
    return total / logits.shape[0] + k * math.log1p(NCE_EPS / noise)


class CRDModule(nn.Module):
    """The two embeddings and the two memory banks (plus Z), one slot per training sample."""

    def __init__(self, s_dim: int, t_dim: int, n_data: int, hp: dict):
        super().__init__()
        self.embed_s = nn.Linear(s_dim, hp["feat_dim"])
        self.embed_t = nn.Linear(t_dim, hp["feat_dim"])
        self.n_data = n_data
        self.k = min(int(hp["nce_k"]), n_data - 1)  # the bank holds only N - 1 other samples
        self.tau = hp["nce_t"]
        self.momentum = hp["nce_m"]
        bound = 1.0 / math.sqrt(hp["feat_dim"] / 3)  # memory.py: uniform with std 1/sqrt(feat_dim)
        self.register_buffer("memory_s", torch.empty(n_data, hp["feat_dim"]).uniform_(-bound, bound))
        self.register_buffer("memory_t", torch.empty(n_data, hp["feat_dim"]).uniform_(-bound, bound))
        # Z of the student-anchored (v_s . bank_t) and teacher-anchored (v_t . bank_s) scores; -1: unset
        self.register_buffer("z", torch.full((2,), -1.0))
        # z >= 0 known without reading z back from the device (a sync per step); a load resets it
        self.z_set = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.z_set = False  # the loaded z may be set or not: the next step looks

    def embed(self, f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.memory_s.dtype  # float32 under autocast too (float64 in tests)
        v_s = F.normalize(self.embed_s(f_s.flatten(1)).to(dtype), dim=1)  # (B, d)
        v_t = F.normalize(self.embed_t(f_t.flatten(1)).to(dtype), dim=1)  # (B, d)
        return v_s, v_t

    def sample_negatives(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, K): per sample, K distinct slots other than its own, uniformly."""
        if self.k == self.n_data - 1:  # every other slot (the loss sums over them: order is moot)
            others = torch.arange(self.k, device=idx.device).expand(idx.shape[0], -1)  # (B, N - 1)
            return others + (others >= idx[:, None]).long()  # skip the sample's own slot
        keys = torch.rand(idx.shape[0], self.n_data, device=idx.device)  # (B, N)
        keys[torch.arange(idx.shape[0], device=idx.device), idx] = 2.0  # its own slot sorts last
        return keys.topk(self.k, dim=1, largest=False).indices  # the K smallest keys: a uniform draw

    @torch.no_grad()
    def update_memory(self, idx: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            moved = bank[idx] * self.momentum + v.detach() * (1 - self.momentum)  # (B, d)
            bank.index_copy_(0, idx, F.normalize(moved, dim=1))

    def scores(
        self, v: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """v . m / tau against every slot (B, N) and against each sample's own slot (B,). The whole
        bank, not the sampled columns: B x N x d multiply-adds instead of gathering B x (1 + K) rows
        of d. The clone is what autograd keeps for the backward, since the bank is updated in place
        after the loss. The positive from its own row, not a column of the (B, N): the backward of a
        gather would be another (B, N) pass."""
        q = v / self.tau  # (B, d)
        return q @ bank.clone().T, (q * bank[idx]).sum(1)

    def forward(
        self, f_s: torch.Tensor, f_t: torch.Tensor, idx: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """f_s (B, D_s), f_t (B, D_t) no grad, idx (B,) training-split indices; `negatives` (B, K)
        fixes the draw (tests). Updates the banks (and Z on the first call) when training."""
        v_s, v_t = self.embed(f_s, f_t)
        if negatives is None and self.k < self.n_data - 1:  # else every other slot: none drawn
            negatives = self.sample_negatives(idx)
        # In float32 under any autocast: exp(. / 0.07) would turn bf16's rounding of the dot products
        # into errors of several percent.
        with torch.autocast(v_s.device.type, enabled=False):
            logits_s, pos_s = self.scores(v_s, self.memory_t, idx)  # (B, N), (B,)
            logits_t, pos_t = self.scores(v_t, self.memory_s, idx)
            z = self.z if self.z_set else self.estimate_z(logits_s, logits_t, idx, negatives)  # (2,)
            log_z = z.log()
            loss = nce_loss(logits_s, pos_s, log_z[0], negatives, self.n_data)
            loss = loss + nce_loss(logits_t, pos_t, log_z[1], negatives, self.n_data)
        if self.training:
            self.update_memory(idx, v_s, v_t)
        return loss

    @torch.no_grad()
    def estimate_z(
        self,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        idx: torch.Tensor,
        negatives: torch.Tensor | None,
    ) -> torch.Tensor:
        """(2,): the stored Z where set, else this batch's mean(exp(v . m / tau)) * N over the scored
        slots; stored when training, so Z comes from the first training batch (memory.py)."""
        if negatives is not None:
            slots = torch.cat([idx[:, None], negatives], dim=1)  # (B, 1 + K)
            logits_s, logits_t = logits_s.gather(1, slots), logits_t.gather(1, slots)
        estimate = torch.stack([logits_s.exp().mean(), logits_t.exp().mean()]) * self.n_data
        z = torch.where(self.z < 0, estimate, self.z)
        if self.training:
            self.z.copy_(z)
            self.z_set = True
        return z


class CRD(Method):
    name = "crd"
    paper = "Tian et al., ICLR 2020"
    source = "HobbitLong/RepDistiller crd/criterion.py, crd/memory.py, train_student.py (crd, -b 0.8)"
    # search: two decades below the authors' beta, one above
    params = {
        **weights(0.8, 0.008, 8.0),
        "feat_dim": Param(128, doc="embedding size of both projections"),
        "nce_k": Param(16384, doc="negatives per sample, capped at n_train - 1"),
        "nce_t": Param(0.07, 0.02, 0.5, log=True, doc="temperature tau of the critic"),
        "nce_m": Param(0.5, doc="momentum of the memory-bank update"),
    }
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "penultimate"

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        (s_shape,), (t_shape,) = s_shapes.values(), t_shapes.values()
        return CRDModule(math.prod(s_shape), math.prod(t_shape), info.n_train, hp)

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        (f_s,), (f_t,) = b.s_feats.values(), b.t_feats.values()
        return combine(b, hp, modules(f_s, f_t, b.idx))
