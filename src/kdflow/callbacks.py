"""The training loop's hooks for side effects (progress, tracking, pruning).

Kept free of torch so that modules which only define callbacks (kdflow.tracking) import fast:
the Snakefile imports config validation, which must not cost every `snakemake` call ~3 s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdflow.engine import FitResult


class Callback:
    """Hooks for side effects. Raising from a hook stops the fit (how pruning works)."""

    def on_fit_start(self, start_epoch: int, epochs: int) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_fit_end(self, result: FitResult) -> None: ...
