"""Checkpoint selection (early stopping): a training run returns its best model on held-out composites.

Both model families keep lowering their triplet loss long after they stopped getting better at what
users run them on: on the bundled photos ColourNet's PSNR on composites of held-out photos peaks
within the first ~20 % of a CPU budget, then falls below the untouched composite as the network
learns its few training photos' colours and over-corrects (``benchmarks/bench_recipe.py``, README).
So when a training job names selection photos (train-model: the photos of the version's val split,
never trained on), rank 0 scores the model on their composites (``pipeline.evaluation.
selection_composites``: masks and grades of their own) before the first step and at every
checkpoint, keeps a CPU copy of the best weights, and writes them into every checkpoint
(``BEST_FILE``, with the step and score in the training state), so a resumed run keeps its best so
far. The run's result is that model, not the last one.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pipeline.evaluation import selection_score
from ssh_model.checkpoints import load_model, save_model, unwrap
from ssh_model.composites import Composite

BEST_FILE = "best_model.safetensors"


@dataclass
class BestSoFar:
    """The best model seen so far on ``composites``, its step and its mean PSNR there."""

    composites: Sequence[Composite]
    psnr: float = -math.inf
    step: int = -1
    model: nn.Module | None = None  # a CPU copy in eval mode
    scores: list[tuple[int, float]] = field(default_factory=list)  # (step, PSNR) of this attempt

    def score(self, model: nn.Module, step: int) -> float:
        """Score ``model`` (DDP-wrapped or not) at ``step``; keep a copy when it is the best so far."""
        net = unwrap(model)
        psnr = selection_score(net, self.composites)
        self.scores.append((step, psnr))
        if psnr > self.psnr:
            self.psnr, self.step = psnr, step
            self.model = copy.deepcopy(net).cpu().eval()
        return psnr

    def state(self) -> dict[str, Any]:
        """What goes into the training state's extra (JSON)."""
        return {"best_step": self.step, "best_psnr": self.psnr}

    def save(self, folder: str) -> None:
        """Write the best model into a checkpoint folder (nothing before the first score)."""
        if self.model is not None:
            save_model(
                self.model,
                os.path.join(folder, BEST_FILE),
                metadata={"step": str(self.step), "select_psnr": f"{self.psnr:.4f}"},
            )

    def restore(self, folder: str, extra: dict[str, Any]) -> None:
        """Take the best so far back from a checkpoint folder written by ``save`` (a resumed run)."""
        found = best_of_checkpoint(folder, extra)
        if found is not None:
            self.model, self.step, self.psnr = found


def best_of_checkpoint(folder: str, extra: dict[str, Any]) -> tuple[nn.Module, int, float] | None:
    """(model, step, PSNR) of the best model a checkpoint folder holds, or None when it holds none."""
    path = os.path.join(folder, BEST_FILE)
    if "best_step" not in extra or not os.path.exists(path):
        return None
    return load_model(path), int(extra["best_step"]), float(extra["best_psnr"])


__all__ = ["BEST_FILE", "BestSoFar", "best_of_checkpoint"]
