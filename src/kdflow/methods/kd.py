"""kd: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.

    loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))

(the formula is written once, in kdflow.losses.kd_loss). Defaults from RepDistiller's
scripts/run_cifar_distill.sh (`--distill kd -r 0.1 -a 0.9`, `--kd_T 4`): CE weight 0.1, KD weight
0.9, T = 4. `logit_std: true` is logit standardisation (Sun et al., CVPR 2024, "Logit
Standardization in Knowledge Distillation"; logit-standardization-KD/mdistiller/distillers/KD.py):
teacher and student logits are z-scored per sample before the temperature.
"""

from __future__ import annotations

from kdflow.losses import kd_loss
from kdflow.methods.base import Batch, Method, Param, ce, kd_term, standardize


class KD(Method):
    name = "kd"
    paper = "Hinton et al., NIPS workshop 2015"
    source = "HobbitLong/RepDistiller scripts/run_cifar_distill.sh (-r 0.1 -a 0.9, --kd_T 4)"
    params = {
        "temperature": Param(4.0, 1.0, 20.0, log=True, doc="softmax temperature T"),
        "alpha": Param(0.9, 0.0, 1.0, doc="weight of the soft term; 1 - alpha weighs CE"),
        "logit_std": Param(False, doc="z-score logits per sample before T (Sun et al. 2024)"),
    }
    tune = ("temperature", "alpha")
    stackable = True  # kdflow.stacked trains kd trials (without logit_std) as one model

    def loss(self, b: Batch, hp: dict, modules) -> dict:
        if not hp["logit_std"]:
            return kd_loss(b.s_logits, b.t_logits, b.y, hp["temperature"], hp["alpha"])
        # Standardisation shapes the soft term only; CE stays on the raw logits.
        kd = kd_term(standardize(b.s_logits.float()), standardize(b.t_logits.float()), hp["temperature"])
        ce_ = ce(b.s_logits, b.y)
        return {"loss": (1 - hp["alpha"]) * ce_ + hp["alpha"] * kd, "ce": ce_, "kd": kd}
