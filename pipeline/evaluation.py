"""Evaluate models and the classical baselines on the same data: validation triplets and the fixed set.

Two evaluation sets, every method scored on exactly the same items:

- the fixed evaluation set: ``ssh_model.composites.evaluation_set`` over the bundled sample
  photos (``ssh_model.samples``) with seed ``EVAL_SEED``: one composite per photo and strength
  level (mild, medium, strong), scored with ``ssh_model.metrics.evaluate`` (MSE, PSNR, fMSE, SSIM
  at full resolution and at 256 px). Models run through ``ssh_model.inference.harmonize``;
  baselines are ``ssh_model.baselines.BASELINES`` (identity, reinhard, histogram).
- validation triplets (the ``val`` split of a triplet version): the network's harmonization pass
  ``net(content_a, reference_b)`` against the pseudo ground truth ``content_b`` over the whole crop;
  baselines re-colour ``content_a`` (whole-image mask) to match ``reference_b``.

Results are rows (one per method and item) and summaries (means per method, optionally per level),
with ``format_table`` for a printable table. Pure compute plus reads; MLflow logging is the caller's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.tracking import RunRecorder, log_rows
from ssh_model.baselines import BASELINES
from ssh_model.composites import Composite, blob_mask, evaluation_set
from ssh_model.dataset import TripletDataset
from ssh_model.images import read_image
from ssh_model.inference import NET_SIZE, harmonize
from ssh_model.metrics import evaluate
from ssh_model.network import images_to_tensor, tensor_to_images
from ssh_model.quality_set import BUCKETS, graded_composite
from ssh_model.samples import sample_photo_paths

logger = logging.getLogger(__name__)

EVAL_SEED = 0
SELECT_SEED = 10  # the checkpoint-selection composites' seed: other masks and grades than EVAL_SEED's
SELECT_MIN_COMPOSITES = 6
SELECT_MAX_SIDE = 512
TABLE_METRICS = ("psnr", "mse", "fmse", "ssim", "psnr_256", "fmse_256")
# What harmonization papers report (iHarmony4's MSE, PSNR, fMSE), at full resolution and at 256 x 256.
BENCHMARK_METRICS = ("mse", "psnr", "fmse", "mse_256", "psnr_256", "fmse_256")
LOWER_IS_BETTER = frozenset({"mse", "fmse", "mse_256", "fmse_256"})
HIGHER_IS_BETTER = frozenset({"psnr", "ssim", "psnr_256", "ssim_256"})

Method = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]  # (composite, mask, background)


def higher_is_better(metric: str) -> bool:
    if metric in HIGHER_IS_BETTER:
        return True
    if metric in LOWER_IS_BETTER:
        return False
    known = sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER)
    raise ValueError(f"unknown metric {metric!r}; expected one of {known}")


# -- the fixed evaluation set -----------------------------------------------------------------------


def downscaled(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` (H, W, 3) with its long side at most ``max_side`` (Lanczos, aspect kept); None: as it is."""
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    picture = Image.fromarray(image)
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def load_eval_photos(max_side: int | None = None, count: int | None = None) -> dict[str, np.ndarray]:
    """The bundled sample photos by stem (the first ``count``), downscaled to ``max_side`` when given."""
    return {Path(path).stem: downscaled(read_image(path), max_side) for path in sample_photo_paths()[:count]}


def selection_composites(photo_urls: Sequence[str], max_side: int | None = SELECT_MAX_SIDE) -> list[Composite]:
    """The composites training picks its checkpoint on: of photos it does not train on (the val split),
    a mild, a medium and a strong one each (at least ``SELECT_MIN_COMPOSITES`` in all), sized like the
    quality benchmark's by the foreground's CIEDE2000 shift (``ssh_model.quality_set``) but with random
    blob masks and grades of the training generator from seeds no bank draws; photos downscaled first."""
    repeats = max(1, math.ceil(SELECT_MIN_COMPOSITES / (len(BUCKETS) * max(1, len(photo_urls)))))
    items = []
    for index, url in enumerate(photo_urls):
        photo = downscaled(read_image(url), max_side)
        for repeat in range(repeats):
            for level, (bucket, _, _) in enumerate(BUCKETS):
                rng = np.random.default_rng([SELECT_SEED, index, repeat, level])
                mask = blob_mask(*photo.shape[:2], rng)
                items.append(
                    graded_composite(f"{index}-{Path(url).stem}-{bucket}-{repeat}", photo, mask, bucket, rng, family="lut")
                )
    return items


def selection_score(model: torch.nn.Module, composites: Sequence[Composite]) -> float:
    """Mean PSNR of ``model`` (through ``harmonize``) on ``composites``: the checkpoint-selection score."""
    return evaluate_composites({"model": model_method(model)}, composites).score("model", "psnr")


def fixed_evaluation_set(max_side: int | None = None, count: int | None = None, seed: int = EVAL_SEED) -> list[Composite]:
    """The fixed evaluation set (same arguments -> same composites, so scores compare across models).

    Args:
        max_side: downscale the photos first (None = full size, the reference setting).
        count: use only the first ``count`` bundled photos (None = all).
        seed: the set's seed; keep ``EVAL_SEED`` to compare with earlier results.
    """
    return evaluation_set(load_eval_photos(max_side, count), seed=seed)


def model_method(model: torch.nn.Module, size: int = NET_SIZE) -> Method:
    """A model as a method: full-resolution ``harmonize`` with the network at ``size``."""

    def run(composite: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
        return harmonize(composite, mask, model, background=background, size=size)

    return run


def methods_for(
    models: Mapping[str, torch.nn.Module], baselines: Sequence[str] = tuple(BASELINES), size: int = NET_SIZE
) -> dict[str, Method]:
    """Named methods: the models (by label) then the chosen baselines (by name)."""
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; expected some of {sorted(BASELINES)}")
    clash = set(models) & set(baselines)
    if clash:
        raise ValueError(f"model labels {sorted(clash)} clash with baseline names")
    methods: dict[str, Method] = {label: model_method(model, size) for label, model in models.items()}
    methods.update({name: BASELINES[name] for name in baselines})
    return methods


# -- results ----------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Scores of several methods on one set: ``rows`` has one dict per (method, item)."""

    set_name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # method -> outputs (when kept)
    items: list[Composite] = field(default_factory=list)  # the composites (when outputs are kept)
    seconds: dict[str, float] = field(default_factory=dict)  # method -> total seconds

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(row["method"] for row in self.rows))

    def summary(self, by_level: bool = False) -> list[dict[str, Any]]:
        """Mean of every metric per method (and per level), in method order."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in self.rows:
            key = (row["method"], row.get("level", "") if by_level else "")
            groups.setdefault(key, []).append(row)
        out = []
        for (method, level), rows in groups.items():
            metrics = [k for k in rows[0] if isinstance(rows[0][k], float)]
            entry: dict[str, Any] = {"set": self.set_name, "method": method}
            if by_level:
                entry["level"] = level
            entry["items"] = len(rows)
            entry.update({m: float(np.mean([r[m] for r in rows])) for m in metrics})
            out.append(entry)
        return out

    def score(self, method: str, metric: str) -> float:
        """The mean of ``metric`` for ``method`` over the set."""
        values = [row[metric] for row in self.rows if row["method"] == method]
        if not values:
            raise KeyError(f"no scores for method {method!r} in the {self.set_name} set")
        return float(np.mean(values))


def evaluate_composites(
    methods: Mapping[str, Method],
    composites: Sequence[Composite],
    keep_outputs: bool = False,
    backgrounds: Sequence[np.ndarray | None] | None = None,
) -> Evaluation:
    """Score every method on every composite (against its ground truth, foreground = its mask).

    Args:
        methods: name -> method, e.g. from ``methods_for``.
        composites: the items, each with its ground truth.
        keep_outputs: keep every method's outputs (and the items) in the result.
        backgrounds: one clean background photo (or None) per composite, passed to the methods;
            None: the methods use each composite's own background.
    """
    if backgrounds is not None and len(backgrounds) != len(composites):
        raise ValueError(f"{len(backgrounds)} backgrounds for {len(composites)} composites")
    result = Evaluation("fixed")
    for name, method in methods.items():
        started = time.perf_counter()
        outputs = []
        for index, item in enumerate(composites):
            output = method(item.composite, item.mask, None if backgrounds is None else backgrounds[index])
            scores = evaluate(output, item.target, item.mask)
            result.rows.append({"method": name, "id": item.id, "level": item.level, **scores})
            if keep_outputs:
                outputs.append(output)
        result.seconds[name] = time.perf_counter() - started
        if keep_outputs:
            result.outputs[name] = outputs
    if keep_outputs:
        result.items = list(composites)
    return result


def _network_outputs(model: torch.nn.Module, content: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """net(content, reference) on uint8 (B, S, S, 3) batches -> uint8 (B, S, S, 3), eval mode, no grad."""
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            output = model(
                images_to_tensor(content).to(parameter.device), images_to_tensor(reference).to(parameter.device)
            )  # (B, 3, S, S) in [-1, 1]
    finally:
        model.train(was_training)
    return tensor_to_images(output)


def evaluate_triplets(
    models: Mapping[str, torch.nn.Module],
    source: str,
    split: str,
    limit: int,
    batch_size: int = 16,
    baselines: Sequence[str] = tuple(BASELINES),
) -> Evaluation | None:
    """Score the models' harmonization pass and the baselines on up to ``limit`` triplets of ``split``.

    Returns None when the version has no triplets of that split (e.g. too few photos for a val split).
    """
    try:
        dataset = TripletDataset(
            source, split=split, batch_size=batch_size, shuffle=False, rank=0, world_size=1, drop_last=False
        )
    except (FileNotFoundError, ValueError) as err:
        logger.info("no %s triplets to evaluate under %s: %s", split, source, err)
        return None
    result = Evaluation(split)
    seen = 0
    for batch in dataset:
        take = min(len(batch["triplet_id"]), limit - seen)
        if take <= 0:
            break
        content, reference, target = (batch[k][:take] for k in ("content_a", "reference_b", "content_b"))
        mask = np.ones(content.shape[1:3], np.float32)  # (S, S): the whole crop is the "foreground"
        predictions = {label: _network_outputs(model, content, reference) for label, model in models.items()}
        for index in range(take):
            ident = batch["triplet_id"][index]
            for label, images in predictions.items():
                result.rows.append(
                    {"method": label, "id": ident, "level": split, **evaluate(images[index], target[index], mask)}
                )
            for name in baselines:
                output = BASELINES[name](content[index], mask, reference[index])
                result.rows.append({"method": name, "id": ident, "level": split, **evaluate(output, target[index], mask)})
        seen += take
    return result if result.rows else None


# -- presenting -------------------------------------------------------------------------------------


def format_table(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """A Markdown table of summary rows (set, method, [level], items, metrics)."""
    if not summary:
        return "(no results)"
    keys = [k for k in ("set", "method", "level", "items") if k in summary[0]]
    metrics = [m for m in metrics if m in summary[0]]
    lines = ["| " + " | ".join(keys + list(metrics)) + " |", "|" + "---|" * (len(keys) + len(metrics))]
    for row in summary:
        cells = [str(row[k]) for k in keys] + [_number(row[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def metrics_for_logging(evaluation: Evaluation) -> dict[str, float]:
    """``{set}/{method}/{metric}`` -> mean (MLflow metric names) for every method and metric."""
    out = {}
    for row in evaluation.summary():
        for key, value in row.items():
            if isinstance(value, float) and math.isfinite(value):
                out[f"{evaluation.set_name}/{row['method']}/{key}"] = value
    return out


def comparison_grid(
    composites: Sequence[Composite], outputs: Mapping[str, Sequence[np.ndarray]], rows: int, side: int = 160
) -> np.ndarray:
    """A side-by-side grid, uint8: one row per composite (the first ``rows``); columns composite,
    ground truth, then each method's output, under a header with the column names."""
    columns = ["composite", "target", *outputs]
    header, pad = 14, 2
    count = min(rows, len(composites))
    width, height = len(columns) * (side + pad) + pad, header + count * (side + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((pad + c * (side + pad) + 2, 1), name[:24], fill=(0, 0, 0))
    for r in range(count):
        item = composites[r]
        images = [item.composite, item.target, *(outputs[m][r] for m in outputs)]
        for c, image in enumerate(images):
            picture = Image.fromarray(image)
            picture.thumbnail((side, side), Image.Resampling.BILINEAR)
            x = pad + c * (side + pad) + (side - picture.width) // 2
            y = header + pad + r * (side + pad) + (side - picture.height) // 2
            canvas.paste(picture, (x, y))
    return np.asarray(canvas)


def record_evaluations(
    recorder: RunRecorder, evaluations: dict[str, Evaluation], step: int, grid_rows: int
) -> dict[str, str]:
    """Metrics, summary and per-item tables, and the fixed set's image grid (its first ``grid_rows`` composites)
    into the active MLflow run; returns the markdown table of each evaluation."""
    tables = {}
    for name, evaluation in evaluations.items():
        recorder.metrics(metrics_for_logging(evaluation), step)
        log_rows(evaluation.summary(), f"evaluation/{name}_summary")
        log_rows(evaluation.rows, f"evaluation/{name}_items")
        tables[name] = format_table(evaluation.summary(by_level=name == "fixed"))
    fixed = evaluations["fixed"]
    mlflow.log_image(comparison_grid(fixed.items, fixed.outputs, grid_rows), "evaluation/fixed_grid.png")
    mlflow.log_text("\n\n".join(f"## {k}\n\n{v}" for k, v in tables.items()), "evaluation/tables.md")
    return tables


__all__ = [
    "record_evaluations",
    "BENCHMARK_METRICS",
    "EVAL_SEED",
    "Evaluation",
    "Method",
    "comparison_grid",
    "evaluate_composites",
    "evaluate_triplets",
    "fixed_evaluation_set",
    "format_table",
    "higher_is_better",
    "load_eval_photos",
    "selection_composites",
    "selection_score",
    "methods_for",
    "metrics_for_logging",
    "model_method",
]
