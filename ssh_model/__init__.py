"""SSH image harmonization as a plain library (no Prefect, Ray or MLflow imports).

    from ssh_model import load_model, harmonize
    out = harmonize(composite, mask, load_model("model.safetensors"))

Names are resolved lazily so that ``import ssh_model`` stays cheap (torch loads on first use).
"""

from importlib import import_module

_EXPORTS = {
    "Settings": "settings",
    "get_settings": "settings",
    "LUT": "lut",
    "read_cube": "lut",
    "write_cube": "lut",
    "random_lut": "lut",
    "lut_bank": "lut",
    "identity_lut": "lut",
    "apply_lut": "lut",
    "apply_lut_torch": "lut",
    "Triplet": "triplets",
    "make_triplet": "triplets",
    "SSHNet": "network",
    "ColourNet": "colour_net",
    "build_model": "network",
    "save_model": "checkpoints",
    "load_model": "checkpoints",
    "harmonize": "inference",
    "load_pretrained": "pretrained",
    "read_image": "images",
    "read_mask": "images",
    "ImageError": "images",
}

__all__ = sorted(_EXPORTS) + ["metrics", "baselines"]


def __getattr__(name: str):
    if name in ("metrics", "baselines"):
        return import_module(f"ssh_model.{name}")
    if name in _EXPORTS:
        return getattr(import_module(f"ssh_model.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ssh_model' has no attribute {name!r}")
