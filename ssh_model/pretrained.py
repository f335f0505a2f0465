"""The model that ships inside the package: trained on the research photo corpus, ready to use.

    from ssh_model import harmonize
    out = harmonize(composite, mask)          # the shipped model, loaded once (``shipped_model``)

The weights (safetensors) and their model card (data sources and terms, recipe, benchmark, limits)
are package data under ``ssh_model/weights/``. ``PRETRAINED_URI`` is how the command line, the batch
job and the registry refer to them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ssh_model.checkpoints import load_model

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PRETRAINED_FILE = WEIGHTS_DIR / "ssh-harmonizer.safetensors"
MODEL_CARD = WEIGHTS_DIR / "MODEL_CARD.md"
PRETRAINED_URI = "pretrained"  # the name users pass as a model (``--model pretrained``)


def pretrained_path() -> Path:
    """Where the shipped weights are; a clear error when the installed package lacks them."""
    if not PRETRAINED_FILE.is_file():
        raise FileNotFoundError(
            f"the shipped weights are missing from the package ({PRETRAINED_FILE}); "
            f"reinstall ssh-harmonization or pass a model file"
        )
    return PRETRAINED_FILE


def load_pretrained(device: str | torch.device = "cpu") -> nn.Module:
    """The shipped model on ``device``, in eval mode."""
    return load_model(str(pretrained_path()), device=device)


@lru_cache(maxsize=1)
def shipped_model() -> nn.Module:
    """The shipped model on the CPU, loaded once per process: what ``harmonize`` uses when given no model.
    Shared: do not train or move it (``load_pretrained`` gives a copy of your own)."""
    return load_pretrained("cpu")


__all__ = ["MODEL_CARD", "PRETRAINED_FILE", "PRETRAINED_URI", "load_pretrained", "pretrained_path", "shipped_model"]
