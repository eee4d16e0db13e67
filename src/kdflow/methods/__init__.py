"""The distillation methods, by name: one file per method (or small family), one line here.

    from kdflow.methods import METHODS
    METHODS["dkd"].loss(batch, hp, modules)

See kdflow.methods.base for what a method declares. The names are also listed, without torch,
in kdflow.registry.METHODS (config validation runs when Snakemake parses the workflow);
tests/test_registry.py checks that the two agree.
"""

from kdflow.methods.base import Method
from kdflow.methods.kd import KD

METHODS: dict[str, Method] = {
    "kd": KD(),
}
