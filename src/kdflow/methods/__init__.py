"""The distillation methods, by name: one file per method (or small family), one line here.

    from kdflow.methods import METHODS
    METHODS["dkd"].loss(batch, hp, modules)

See kdflow.methods.base for what a method declares. Their declarations are also written, without
torch, in kdflow.registry.METHODS (config validation runs when Snakemake parses the workflow);
tests/test_registry.py checks that the two agree and prints the line to paste when they do not.
"""

from kdflow.methods.ab import AB
from kdflow.methods.at import AT
from kdflow.methods.base import Method
from kdflow.methods.cc import CC
from kdflow.methods.crd import CRD
from kdflow.methods.diffkd import DiffKD
from kdflow.methods.diffrep import DiffRep
from kdflow.methods.dist import DIST
from kdflow.methods.dkd import DKD
from kdflow.methods.dml import DML
from kdflow.methods.fitnets import FitNets
from kdflow.methods.fsp import FSP
from kdflow.methods.ft import FT
from kdflow.methods.kd import KD
from kdflow.methods.noisy import NoisyKD
from kdflow.methods.nst import NST
from kdflow.methods.pkt import PKT
from kdflow.methods.rkd import RKD
from kdflow.methods.sp import SP
from kdflow.methods.vid import VID

METHODS: dict[str, Method] = {
    # logits
    "kd": KD(),
    "dkd": DKD(),
    "dist": DIST(),
    # features and relations (RepDistiller's order)
    "fitnets": FitNets(),
    "at": AT(),
    "sp": SP(),
    "cc": CC(),
    "rkd": RKD(),
    "pkt": PKT(),
    "vid": VID(),
    "crd": CRD(),
    "ab": AB(),
    "ft": FT(),
    "fsp": FSP(),
    "nst": NST(),
    # the founding papers
    "diffrep": DiffRep(),
    "diffkd": DiffKD(),
    # the survey's teacher variants
    "noisy": NoisyKD(),  # noise on the teacher's logits
    "dml": DML(),  # no teacher: a cohort of students
}
