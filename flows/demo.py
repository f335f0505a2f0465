"""The main job on embedded defaults: bundled photos -> triplets -> a short training -> harmonized composites -> report.

Needs no accounts and no downloads. Two bundled photos are held out: the model never trains on
them, and the before/after report harmonizes composites made from them (with ground truth, so the
report shows numbers next to the pictures, for the model and for the classical baselines).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ssh_model.baselines import BASELINES
from ssh_model.checkpoints import save_model
from ssh_model.composites import evaluation_set
from ssh_model.harmonize import harmonize
from ssh_model.images import read_image
from ssh_model.lut import LUT, lut_bank
from ssh_model.metrics import evaluate
from ssh_model.network import ssh_small
from ssh_model.report import ReportRow, render_report
from ssh_model.samples import sample_photo_paths
from ssh_model.settings import get_settings
from ssh_model.storage import join, write_bytes_atomic
from ssh_model.train import StepEvent, TrainConfig, train
from ssh_model.triplets import make_triplet

log = logging.getLogger("ssh.demo")

HELD_OUT = ("chelsea", "flower")
DEMO_STEPS = 300
DEMO_CROP = 64
DEMO_BATCH = 8


def triplet_batches(
    photos: list[np.ndarray], bank: list[LUT], rng: np.random.Generator, batch_size: int, crop_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """An endless stream of in-memory triplet batches: dict of uint8 (B, S, S, 3) arrays."""
    keys = ("content_a", "reference_a", "reference_b", "content_b")
    while True:
        rows = []
        for _ in range(batch_size):
            photo = photos[rng.integers(len(photos))]
            a, b = rng.choice(len(bank), size=2, replace=False)
            rows.append(make_triplet(photo, bank[a], bank[b], rng, crop_size=crop_size))
        yield {key: np.stack([getattr(t, key) for t in rows]) for key in keys}


def _log_progress(event: StepEvent) -> None:
    log.info(
        "step %d/%d loss %.4f  %.1f samples/s  ETA %.0fs",
        event.step, event.steps, event.losses["total"], event.samples_per_s, event.eta_s,
    )


def demo(data_root: str | None = None, train_steps: int | None = None) -> dict:
    """Run the whole demo; returns paths and the mean metrics per method."""
    settings = get_settings()
    out = join(data_root or settings.data_root, "demo")
    Path(out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    photos = {Path(p).stem: read_image(p) for p in sample_photo_paths()}
    train_photos = [image for name, image in photos.items() if name not in HELD_OUT]
    log.info("photos: %d for training, %d held out for the report", len(train_photos), len(HELD_OUT))

    rng = np.random.default_rng(settings.seed)
    batches = triplet_batches(train_photos, lut_bank(settings.seed, 100), rng, DEMO_BATCH, DEMO_CROP)
    config = TrainConfig(steps=train_steps or DEMO_STEPS, batch_size=DEMO_BATCH, lr=1e-3, warmup_steps=20,
                         log_every=25, sample_every=10**9, seed=settings.seed)
    model = ssh_small()
    train(model, batches, config, callback=_log_progress)
    model_url = join(out, "model.safetensors")
    save_model(model.eval(), model_url)
    log.info("model written to %s", model_url)

    rows, scores = [], {name: [] for name in ["model", *BASELINES]}
    for item in evaluation_set({name: photos[name] for name in HELD_OUT}, seed=settings.seed):
        outputs = {"model": harmonize(item.composite, item.mask, model)}
        outputs.update({name: fn(item.composite, item.mask) for name, fn in BASELINES.items()})
        metrics = {name: evaluate(image, item.target, item.mask) for name, image in outputs.items()}
        for name in scores:
            scores[name].append(metrics[name])
        rows.append(ReportRow(
            item.id,
            {"composite": item.composite, "mask": item.mask, "harmonized": outputs["model"],
             "reinhard": outputs["reinhard"], "ground truth": item.target},
            {f"{name} PSNR": m["psnr"] for name, m in metrics.items()} | {"model fMSE": metrics["model"]["fmse"]},
        ))
    summary = {name: {k: float(np.mean([m[k] for m in ms])) for k in ("psnr", "mse", "fmse", "ssim")}
               for name, ms in scores.items()}
    report_url = join(out, "report.html")
    write_bytes_atomic(report_url, render_report(
        "SSH demo: held-out composites", rows,
        {f"{name} (mean)": ", ".join(f"{k} {v:.2f}" for k, v in m.items()) for name, m in summary.items()},
    ).encode())
    write_bytes_atomic(join(out, "metrics.json"), json.dumps(summary, indent=2).encode())
    for name, m in summary.items():
        log.info("%-10s PSNR %.2f  MSE %.1f  fMSE %.1f  SSIM %.3f", name, m["psnr"], m["mse"], m["fmse"], m["ssim"])
    log.info("report: %s (%.0f s in all)", report_url, time.perf_counter() - started)
    return {"report": report_url, "model": model_url, "metrics": summary}
