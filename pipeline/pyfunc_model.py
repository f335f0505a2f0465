"""The MLflow pyfunc of the SSH harmonizer, logged as a "model from code" (no pickle anywhere).

MLflow copies this file into the logged model and executes it at load time; the weights travel as
a safetensors artifact named ``weights`` (read by ``ssh_model.checkpoints.load_model``), so
``mlflow.pyfunc.load_model("models:/ssh-harmonizer@champion")`` works with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. Imports only MLflow and the library (no Prefect,
no Ray), so any Python with ``ssh-harmonization`` installed can serve it:

    mlflow models serve -m models:/ssh-harmonizer@champion --env-manager local -p 5001

``predict`` takes a DataFrame of encoded images (PNG/JPEG/WebP/TIFF bytes), one composite a row, in
the columns of ``pipeline.serving.SIGNATURE`` (every model is logged with it, and an input example):

    composite       the composite; RGBA when its alpha is the mask
    mask            optional: the foreground mask (soft values are blend weights)
    background      optional: a clean background photo to match instead of the composite's own
    reference_mask  optional: the part of the background to match

and returns a DataFrame with one ``harmonized`` column of PNG bytes. The scoring server decodes
base64 into these binary columns because the signature says they are binary, and base64-encodes the
result. ``params={"size": 256}`` sets the network's working resolution. A row the library refuses
is a 400 answer naming the row and the reason (``ssh_model.errors``).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from pipeline.serving import DEFAULT_SIZE, OPTIONAL_INPUTS, SIGNATURE
from ssh_model.checkpoints import load_model
from ssh_model.errors import HarmonizeInputError
from ssh_model.images import decode_image, decode_image_with_mask, decode_mask, encode_image

MIN_SIZE, MAX_SIZE = 32, 2048  # the network's working resolution (long side)


def _cell(row: pd.Series, name: str) -> bytes | None:
    """The bytes of an optional column, None when the column is absent or the cell empty."""
    value = row.get(name)
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) and len(value) else None


def harmonize_row(row: pd.Series, label: str, model, size: int) -> bytes:
    """One row of encoded images -> the harmonized composite as PNG bytes."""
    from ssh_model.inference import harmonize_details  # imported late: loading the model must not need it

    composite_bytes = _cell(row, "composite")
    if composite_bytes is None:
        raise HarmonizeInputError("invalid", f"{label}: no composite bytes")
    mask_bytes, background_bytes, reference_bytes = (_cell(row, name) for name in OPTIONAL_INPUTS)
    composite, mask = decode_image_with_mask(composite_bytes, mask_bytes, f"{label} composite", f"{label} mask")
    background = decode_image(background_bytes, f"{label} background") if background_bytes else None
    reference = decode_mask(reference_bytes, f"{label} reference_mask") if reference_bytes else None
    result = harmonize_details(
        composite,
        mask,
        model,
        background,
        size,
        reference_mask=reference,
        names=(f"{label} composite", f"{label} mask", f"{label} reference_mask"),
    ).image
    return encode_image(result, "PNG")


class SSHHarmonizerModel(PythonModel):
    """Harmonizes composites with the network stored in the ``weights`` artifact."""

    def load_context(self, context) -> None:
        import torch  # deferred with harmonize: loading the pyfunc reads the weights first

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(context.artifacts["weights"], device=device)

    def predict(self, context, model_input, params=None):
        size = (params or {}).get("size", DEFAULT_SIZE)
        if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
            raise MlflowException(
                f"params.size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}", error_code=INVALID_PARAMETER_VALUE
            )
        if not isinstance(model_input, pd.DataFrame):
            raise MlflowException(
                f"input must be a DataFrame with the columns {SIGNATURE.inputs.input_names()}, "
                f"got {type(model_input).__name__}",
                error_code=INVALID_PARAMETER_VALUE,
            )
        outputs = []
        for index, row in model_input.iterrows():
            try:
                outputs.append(harmonize_row(row, f"row {index}", self.model, size))
            except HarmonizeInputError as err:  # the client's input: a 400 naming the row and the reason
                raise MlflowException(f"{err.reason}: {err}", error_code=INVALID_PARAMETER_VALUE) from err
        return pd.DataFrame({"harmonized": outputs}, index=model_input.index)


mlflow.models.set_model(SSHHarmonizerModel())
