"""Stage 2 of bulk harmonization: the actor-pool predictor, and the model it runs.

- ``ModelPayload``: the model the driver resolves once (an alias is pinned for the whole run) and
  ships to every actor through Ray's object store: the checkpoint file's bytes.
- ``Harmonizer``: builds the model once per actor (on its GPU when it has one) and maps a batch of
  fetched rows (``pipeline.batch_stages``) to result records: decode, check, harmonize at full
  resolution, encode in the output's format, write atomically. It never raises for a problem with
  one row: that is the row's error record with its ``reason``.

Kept apart from the fetch stage so the light fetch tasks never import torch or the model.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from pipeline.batch_stages import INPUTS, OUTPUT_SCHEMA, THUMBS, sha256_hex
from pipeline.results import HASH_COLUMNS, METRICS_COLUMN, new_record
from ssh_model.baselines import BASELINES
from ssh_model.checkpoints import model_from_bytes
from ssh_model.errors import HarmonizeInputError, redact, storage_error
from ssh_model.images import (
    decode_image,
    decode_image_with_mask,
    decode_mask,
    encode_image,
    output_format,
    probe_image,
)
from ssh_model.inference import harmonize_details
from ssh_model.metrics import evaluate
from ssh_model.report import thumbnail
from ssh_model.storage import read_bytes, write_bytes_atomic

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- model loading


@dataclass(frozen=True)
class ModelPayload:
    """A resolved model as plain data: what the driver ships to every actor through Ray's object store.

    The driver resolves the URI once (an alias such as ``@champion`` is pinned for the whole run),
    so every actor runs exactly that version without talking to the registry itself.
    """

    uri: str
    version: str  # "name/N" for registry URIs, "sha256:<12 hex>" for checkpoint files (pipeline.registry)
    weights: bytes  # the ``save_model`` file: safetensors with the model config in its metadata (no pickle)


def load_model_payload(model_uri: str) -> ModelPayload:
    """Resolve ``model_uri`` (``models:/...``, ``pretrained`` or a ``.safetensors`` URL) and check it loads."""
    from pipeline.registry import model_bytes, model_of  # deferred: MLflow is for the driver, not the actors

    data, version, name = model_bytes(model_uri)
    model_of(data, name)  # a file that is not a model fails here, once, not in every actor
    return ModelPayload(uri=model_uri, version=version, weights=data)


def model_from_payload(payload: ModelPayload, device: str = "cpu") -> Any:
    """The network of a payload, in eval mode on ``device``."""
    return model_from_bytes(payload.weights, f"model {redact(payload.uri)}", device)


# ---------------------------------------------------------------- stage 2: harmonize


def _thumbnail_bytes(image: np.ndarray) -> bytes:
    return encode_image(thumbnail(image), "JPEG", quality=85)


class Harmonizer:
    """The Ray Data predictor: builds the model once per actor, then maps a batch of fetched rows to records.

    Args:
        model: the resolved model (a ``ModelPayload``, or a Ray object reference to one).
        jpeg_quality: JPEG/WebP output quality.
        max_pixels: pixel limit for every decoded image.
        run_id: stamped on every record.
        num_threads: torch CPU threads for this actor.
        use_gpu: run on CUDA when the actor was given a GPU.
    """

    def __init__(
        self, model: Any, jpeg_quality: int, max_pixels: int, run_id: str, num_threads: int = 1, use_gpu: bool = False
    ) -> None:
        if not isinstance(model, ModelPayload):
            model = ray.get(model)
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(max(1, num_threads))  # this actor's process only
        self.model = model_from_payload(model, self.device)
        self.model_version = model.version
        self.jpeg_quality = jpeg_quality
        self.max_pixels = max_pixels
        self.run_id = run_id
        logger.info("actor pid %d runs %s (version %s) on %s", os.getpid(), model.uri, model.version, self.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.process(row) for row in batch.to_pylist()], schema=OUTPUT_SCHEMA)

    def process(self, row: dict) -> dict:
        """One row -> one record (plus thumbnails); never raises for a problem with the row's data."""
        started = time.perf_counter()
        base = {k: row[k] or None for k in ("id", "output", *INPUTS)}
        base.update(
            {k: row[k] for k in HASH_COLUMNS},
            model_version=self.model_version,
            jpeg_quality=self.jpeg_quality,
            run_id=self.run_id,
        )
        thumbs: dict[str, bytes] = {}
        if row["pre_status"] == "skipped":
            previous = json.loads(row["previous"])
            record = new_record(
                **base,
                status="skipped",
                width=previous.get("width"),
                height=previous.get("height"),
                output_sha256=row["output_sha256"],
                output_size=row["output_size"],
                **{METRICS_COLUMN: previous.get(METRICS_COLUMN)},
            )
            if row["thumbs"]:
                thumbs = self._skipped_thumbnails(row)
        elif row["pre_status"] == "error":
            record = new_record(**base, status="error", reason=row["pre_reason"], error=row["pre_error"])
        else:
            try:
                record, thumbs = self._harmonize_row(row, base)
            except Exception as err:  # noqa: BLE001 - one bad row must fail alone, with its reason
                if isinstance(err, HarmonizeInputError):  # ImageError included
                    reason, message = err.reason, str(err)
                elif isinstance(err, ValueError):  # the library refused this row's data
                    reason, message = "invalid", f"{row['id']}: {err}"
                elif isinstance(err, OSError):
                    reason, message = "io", f"{type(err).__name__}: {err}"
                else:
                    logger.exception("row %s failed unexpectedly", row["id"])
                    reason, message = "internal", f"{type(err).__name__}: {err}"
                record = new_record(**base, status="error", reason=reason, error=message)
        record["seconds"] = (row["fetch_seconds"] or 0.0) + time.perf_counter() - started
        record["index"] = row["index"]
        for name in THUMBS:
            record[f"thumb_{name}"] = thumbs.get(name, b"")
        return record

    def _skipped_thumbnails(self, row: dict) -> dict[str, bytes]:
        """Report thumbnails of an up-to-date row: its inputs and the output already written (best effort:
        a row whose pictures cannot be read is still skipped, just shown without them)."""
        try:
            composite, mask = self._composite_and_mask(row)
            images = {
                "composite": composite,
                "mask": mask,
                "harmonized": decode_image(read_bytes(row["output"]), row["output"], max_pixels=self.max_pixels),
            }
            if row["target"]:
                images["target"] = decode_image(row["target_bytes"], row["target"], max_pixels=self.max_pixels)
        except Exception as err:  # noqa: BLE001 - thumbnails never fail a row
            logger.warning("no thumbnails for skipped row %s: %s", row["id"], err)
            return {}
        return {name: _thumbnail_bytes(image) for name, image in images.items() if image is not None}

    def _composite_and_mask(self, row: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """(H, W, 3) and (H, W) in [0, 1]: the row's mask file, or without one the composite's alpha (None: neither)."""
        mask_bytes = row["mask_bytes"] if row["mask"] else None
        return decode_image_with_mask(row["composite_bytes"], mask_bytes, row["composite"], row["mask"], self.max_pixels)

    def _harmonize_row(self, row: dict, base: dict) -> tuple[dict, dict[str, bytes]]:
        def mask_of(name: str) -> np.ndarray | None:
            return decode_mask(row[f"{name}_bytes"], row[name], max_pixels=self.max_pixels) if row[name] else None

        info = probe_image(row["composite_bytes"], row["composite"], self.max_pixels)
        composite, mask = self._composite_and_mask(row)  # mask None: harmonize's "no_mask"
        background = None
        if row["background"]:
            background = decode_image(row["background_bytes"], row["background"], max_pixels=self.max_pixels)
        names = (
            f"composite {row['composite']}",
            f"mask {row['mask']}" if row["mask"] else f"the alpha of {row['composite']}",
            f"reference mask {row['reference_mask']}",
        )
        result = harmonize_details(
            composite, mask, self.model, background, reference_mask=mask_of("reference_mask"), names=names
        ).image  # (H, W, 3) uint8
        height, width = composite.shape[:2]
        metrics: dict[str, float] = {}
        target = None
        if row["target"]:
            target = decode_image(row["target_bytes"], row["target"], max_pixels=self.max_pixels)
            if target.shape != composite.shape:
                raise HarmonizeInputError(
                    "target_size",
                    f"target {row['target']} is {target.shape[1]}x{target.shape[0]}, composite is {width}x{height}",
                )
            metrics.update({f"model_{k}": float(v) for k, v in evaluate(result, target, mask).items()})
            for name, baseline in BASELINES.items():
                predicted = baseline(composite, mask, background)
                scores = evaluate(predicted, target, mask)
                metrics.update({f"{name}_{k}": float(v) for k, v in scores.items()})
        fmt = output_format(row["output"], fallback=info.format) or "PNG"  # the output's extension, else the input's
        data = encode_image(result, fmt, quality=self.jpeg_quality)
        try:
            write_bytes_atomic(row["output"], data)
        except Exception as err:  # noqa: BLE001 - a write that fails is the row's storage error
            raise storage_error(err, row["output"], "output") from err
        thumbs = {}
        if row["thumbs"]:
            images = {"composite": composite, "mask": mask, "harmonized": result, "target": target}
            thumbs = {name: _thumbnail_bytes(image) for name, image in images.items() if image is not None}
        record = new_record(
            **base,
            status="ok",
            width=width,
            height=height,
            output_sha256=sha256_hex(data),
            output_size=len(data),
            **{METRICS_COLUMN: json.dumps(metrics) if metrics else None},
        )
        return record, thumbs
