"""dml: Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018.

    p_k  = softmax(z_k)                       the K networks of a cohort, on the same batch
    L_k  = CE(z_k, y) + 1/(K-1) sum_{l != k} KL(p_l || p_k)     (p_l a fixed target for network k)
    loss = sum_k L_k

Students teach each other while they train, with no pre-trained teacher: the pair's teacher is not
read (give the row `pairs:` to train it once). The saved model is network 1, the student; the
other K-1 are its peers, a fresh initialisation of the same architecture each, trained in the same
job beside it (and in its checkpoint, so a killed job resumes exactly). Defaults from the paper
(K = 2, KL at temperature 1, each network's loss weighing CE and the mean KL equally). Our choice:
the networks are updated together in one step, each against its peers' predictions of that step
(detached), where the paper's Algorithm 1 updates them in turn, recomputing predictions between;
with one optimizer over the cohort this is the form that keeps one job one training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, Param, ce


def mutual_losses(logits: list[torch.Tensor], y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Each network's CE and mean KL from its peers' (detached) distributions to its own."""
    k = len(logits)
    logp = [F.log_softmax(z.float(), -1) for z in logits]
    out = []
    for i in range(k):
        kl = sum(
            F.kl_div(logp[i], logp[j].detach(), log_target=True, reduction="batchmean")
            for j in range(k)
            if j != i
        ) / (k - 1)
        out.append({"ce": ce(logits[i], y), "kl": kl})
    return out


class DML(Method):
    name = "dml"
    paper = "Zhang et al., CVPR 2018"
    source = "the paper (cohort of 2, KL at T = 1, equal weights); no teacher"
    params = {
        "cohort": Param(2, valid=(2, 16), doc="networks trained together; the first is the saved student")
    }

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        return nn.ModuleDict(
            {"peers": nn.ModuleList(info.new_student() for _ in range(int(hp["cohort"]) - 1))}
        )

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        logits = [b.s_logits, *(peer(b.x) for peer in modules["peers"])]
        parts = mutual_losses(logits, b.y)
        total = sum(p["ce"] + p["kl"] for p in parts)
        return {"loss": total, "ce": parts[0]["ce"], "kl": parts[0]["kl"]}
