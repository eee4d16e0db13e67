"""Deep directed generative models and their distillation (KD4DGM, Chen et al., CVPR 2023; issue #13).

    from kdflow.dgm import LadderVAE, kd4dgm_loss, importance_nll
    teacher, student = LadderVAE((40,), hidden=256), LadderVAE((40,), hidden=32)
    student.encoder.requires_grad_(False)                 # only the generative part learns, as the authors
    parts = kd4dgm_loss(teacher, student, teacher.sample_noise(128), lam=0.1)

Models: `lvae` (ladder VAE), `hm` (Helmholtz machine, exact likelihood, wake-sleep; Old Faithful),
`vrnn` (variational RNN for sequences), each with its distillation loss; `continual` (a
class-conditional ladder VAE learning two tasks). Losses of the ladder VAE: `losses` (KD4DGM,
teacher-forced and sample-ELBO arms). Metrics: `nll` (importance-sampled NLL, MMD, Fréchet distance).
The pipeline (`task: generative`): `family` (what a family provides) and `families` (FAMILIES),
`jobs` (train, distil, evaluate), `tune` (Optuna on the validation NLL), `smk` (config -> arguments).
"""

from kdflow.dgm.hm import HelmholtzMachine, load_old_faithful
from kdflow.dgm.losses import (
    check_latents,
    kd4dgm_loss,
    output_kl,
    sample_elbo_loss,
    teacher_forced_loss,
    w2_squared,
)
from kdflow.dgm.lvae import Generation, LadderVAE
from kdflow.dgm.nll import (
    effective_sample_size,
    fit_proposal,
    frechet_distance,
    gaussian_mmd,
    importance_log_weights,
    importance_nll,
)
from kdflow.dgm.vrnn import VRNN

__all__ = [
    "Generation",
    "HelmholtzMachine",
    "LadderVAE",
    "VRNN",
    "check_latents",
    "effective_sample_size",
    "fit_proposal",
    "frechet_distance",
    "gaussian_mmd",
    "importance_log_weights",
    "importance_nll",
    "kd4dgm_loss",
    "load_old_faithful",
    "output_kl",
    "sample_elbo_loss",
    "teacher_forced_loss",
    "w2_squared",
]
