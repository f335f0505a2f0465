"""What a registered model answers when served: the signature every version is logged with, and its
input example.

``mlflow models serve -m models:/ssh-harmonizer@champion`` reads the signature to decode the base64
of each binary column of a ``dataframe_split`` request; without it the scoring server hands the
model strings (versions registered before the signature existed: ``pipeline.registry.servable_problem``
says so, ``upgrade_version`` re-registers them). Imports only MLflow types and the library: the
pyfunc (``pipeline/pyfunc_model.py``) imports it when a server loads a model.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from ssh_model.images import encode_image

DEFAULT_SIZE = 256
OPTIONAL_INPUTS = ("mask", "background", "reference_mask")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", "composite"), *[ColSpec("binary", name, required=False) for name in OPTIONAL_INPUTS]]),
    outputs=Schema([ColSpec("binary", "harmonized")]),
    params=ParamSchema([ParamSpec("size", "long", DEFAULT_SIZE)]),
)


def serve_command(model_uri: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start MLflow's scoring server for ``model_uri`` with this Python."""
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "--host", host, "--port", str(port)]
    scripts = os.path.dirname(sys.executable)  # the server execs `uvicorn` from this environment's bin folder
    return command, {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}


def input_example(height: int = 24, width: int = 32) -> pd.DataFrame:
    """One small composite (a shifted square on a gradient) and its mask as PNG bytes: what a request holds."""
    yy, xx = np.mgrid[0:height, 0:width]
    composite = np.stack([xx * 6, yy * 8, 120 + 0 * xx], axis=2).astype(np.uint8)  # (H, W, 3)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    composite[mask > 0] = (200, 90, 60)
    return pd.DataFrame({"composite": [encode_image(composite, "PNG")], "mask": [encode_image(mask, "PNG")]})


__all__ = ["DEFAULT_SIZE", "OPTIONAL_INPUTS", "SIGNATURE", "input_example", "serve_command"]
