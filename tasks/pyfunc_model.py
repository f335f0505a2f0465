"""The MLflow pyfunc of the SSH harmonizer, logged as a "model from code" (no pickle anywhere).

MLflow copies this file into the logged model and executes it at load time; the weights travel as
a safetensors artifact named ``weights`` (read by ``ssh_model.checkpoints.load_model``), so
``mlflow.pyfunc.load_model("models:/ssh-harmonizer@champion")`` works with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. Imports only MLflow and the library (no Prefect,
no Ray), so any Python with ``ssh-harmonization`` installed can serve it.

``predict`` takes either

- a dict ``{"composite": uint8 (H, W, 3), "mask": (H, W) float in [0, 1] / uint8 / bool,
  "background": optional uint8 (H', W', 3)}``, or lists of those under the same keys
  -> the harmonized uint8 (H, W, 3) image (or a list of them);
- a pandas DataFrame with columns ``composite`` and ``mask`` (and optionally ``background``)
  holding encoded image bytes (PNG/JPEG/WebP) -> a DataFrame with a ``harmonized`` column of PNG bytes.

``params={"size": 256}`` sets the network's working resolution.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from ssh_model.checkpoints import load_model
from ssh_model.images import decode_image, decode_mask, encode_image

DEFAULT_SIZE = 256


def _harmonize(composite, mask, model, background, size):
    from ssh_model.inference import harmonize  # imported late: loading the model must not need it

    return harmonize(composite, mask, model, background=background, size=size)


class SSHHarmonizerModel(PythonModel):
    """Harmonizes composites with the network stored in the ``weights`` artifact."""

    def load_context(self, context) -> None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(context.artifacts["weights"], device=device)

    def predict(self, context, model_input, params=None):
        size = int((params or {}).get("size", DEFAULT_SIZE))
        if hasattr(model_input, "iterrows"):  # a pandas DataFrame of encoded images
            return self._predict_frame(model_input, size)
        if not isinstance(model_input, dict) or "composite" not in model_input or "mask" not in model_input:
            raise ValueError("input must be a dict with 'composite' and 'mask' (and optional 'background'), "
                             "or a DataFrame with those columns of encoded images")
        composite, mask = model_input["composite"], model_input["mask"]
        background = model_input.get("background")
        if isinstance(composite, list | tuple):
            backgrounds = (background if isinstance(background, list | tuple)
                           else [background] * len(composite))
            return [_harmonize(np.asarray(c), np.asarray(m), self.model, b, size)
                    for c, m, b in zip(composite, mask, backgrounds, strict=True)]
        return _harmonize(np.asarray(composite), np.asarray(mask), self.model, background, size)

    def _predict_frame(self, frame, size: int):
        import pandas as pd

        outputs = []
        for index, row in frame.iterrows():
            name = f"row {index}"
            composite = decode_image(bytes(row["composite"]), f"{name} composite")
            mask = decode_mask(bytes(row["mask"]), f"{name} mask")
            background = row.get("background")
            if background is not None and not (isinstance(background, float) and np.isnan(background)):
                background = decode_image(bytes(background), f"{name} background")
            else:
                background = None
            outputs.append(encode_image(_harmonize(composite, mask, self.model, background, size), "PNG"))
        return pd.DataFrame({"harmonized": outputs}, index=frame.index)


mlflow.models.set_model(SSHHarmonizerModel())
