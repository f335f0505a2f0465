"""Benchmark: harmonization quality on composites of photos no model trains on (the yardstick).

    python -m benchmarks.bench_quality [--models pretrained,FILE,...] [--per-photo 2] [--cross 60]

Needs the research photo corpus (``ssh_model.corpus``; ``SSH_PHOTO_CORPUS`` or ``../shared/photos``) and
reads only its ``holdout/`` photos and masks. Everything is seeded: the same corpus gives the same cases.

- **graded** (``--per-photo`` per holdout photo, >= 300 in all): the BSDS500 photos with their own
  object masks, every other photo with a BSDS500 holdout outline placed and scaled on it; the
  foreground re-graded by a photographic edit (``ssh_model.grades``: white balance, exposure,
  contrast, gamma, saturation, split toning, looks from seeds no training bank draws) sized into
  three equal buckets by the foreground's mean CIEDE2000 shift (``ssh_model.quality_set.BUCKETS``).
  The untouched photo is the ground truth: MSE, PSNR, fMSE per bucket and overall, at full
  resolution and at 256 px; mean latency per image.
- **cross** (``--cross``): an object of one BSDS500 holdout photo pasted onto another holdout photo; no
  ground truth: the distance between the foreground's and the background's mean Lab colour before
  and after, and a contact sheet (composite | each model | Reinhard) to look at.

Methods: identity (the composite as it is), Reinhard transfer, histogram matching and every model
given (default: the shipped one). The targets of the shipped model are checked and recorded.
Writes ``benchmarks/results/quality.json`` and ``quality-sheet.png`` (the sheet is not committed: it
shows corpus photos) and prints the table.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from benchmarks import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
SHEET = RESULTS.with_name("quality-sheet.png")
SEED = 2026
SHEET_ROWS, SHEET_HEIGHT = 12, 200
METRICS = ("mse", "psnr", "fmse", "mse_256", "psnr_256", "fmse_256")

logger = logging.getLogger("bench_quality")


def graded_cases(root: Path, per_photo: int, seed: int = SEED) -> list:
    """``per_photo`` graded composites of every holdout photo, buckets in turn."""
    from ssh_model.corpus import object_masks, photos
    from ssh_model.images import read_image, read_mask
    from ssh_model.quality_set import assign_buckets, graded_composite, place_mask

    masks = object_masks(root, "holdout")
    outlines = [path for stem in sorted(masks) for path in masks[stem]]
    holdout = photos(root, "holdout")
    buckets = assign_buckets(len(holdout) * per_photo)
    cases = []
    for p, path in enumerate(holdout):
        photo = read_image(str(path))
        for k in range(per_photo):
            rng = np.random.default_rng([seed, p, k])
            own = masks.get(path.stem, [])
            if own:
                mask = read_mask(str(own[k % len(own)])) > 0.5
            else:
                outline = read_mask(str(outlines[int(rng.integers(len(outlines)))])) > 0.5
                mask = place_mask(outline, *photo.shape[:2], rng)
            case_id = f"{path.parent.name}/{path.stem}-{k}"
            cases.append(graded_composite(case_id, photo, mask, buckets[p * per_photo + k], rng))
    return cases


def cross_cases(root: Path, count: int, seed: int = SEED) -> list:
    """``count`` objects of BSDS500 holdout photos pasted onto other holdout photos."""
    from ssh_model.corpus import object_masks, photos
    from ssh_model.images import read_image, read_mask
    from ssh_model.quality_set import pasted_composite

    masks = object_masks(root, "holdout")
    holdout = photos(root, "holdout")
    by_stem = {p.stem: p for p in holdout}
    objects = [(stem, path) for stem in sorted(masks) if stem in by_stem for path in masks[stem]]
    cases = []
    for i in range(count):
        rng = np.random.default_rng([seed, 10_000 + i])
        stem, mask_path = objects[int(rng.integers(len(objects)))]
        background = holdout[int(rng.integers(len(holdout)))]
        while background.stem == stem:
            background = holdout[int(rng.integers(len(holdout)))]
        cases.append(
            pasted_composite(
                f"{stem}->{background.stem}",
                read_image(str(by_stem[stem])),
                read_mask(str(mask_path)) > 0.5,
                read_image(str(background)),
                rng,
            )
        )
    return cases


def load_models(specs: list[str]) -> dict[str, Any]:
    """label -> model for ``label=URI`` or ``URI`` specs (``pretrained`` = the shipped weights)."""
    from ssh_model.checkpoints import load_model
    from ssh_model.pretrained import PRETRAINED_URI, load_pretrained

    models = {}
    for spec in specs:
        label, _, uri = spec.rpartition("=")
        uri = uri.strip()
        label = label or ("shipped" if uri == PRETRAINED_URI else Path(uri).stem)
        models[label] = load_pretrained() if uri == PRETRAINED_URI else load_model(uri)
    return models


def score_graded(methods: dict[str, Any], cases: list) -> dict[str, Any]:
    """method -> {"overall"|bucket: {metric: mean}, "latency_ms": mean per image}."""
    from ssh_model.metrics import evaluate
    from ssh_model.quality_set import BUCKETS

    scores: dict[str, Any] = {}
    for name, method in methods.items():
        rows, seconds = [], []
        for case in cases:
            started = time.perf_counter()
            output = method(case.composite, case.mask)
            seconds.append(time.perf_counter() - started)
            rows.append({"bucket": case.level, **evaluate(output, case.target, case.mask)})
        groups = {"overall": rows, **{b: [r for r in rows if r["bucket"] == b] for b, _, _ in BUCKETS}}
        scores[name] = {
            group: {"cases": len(members), **{m: round(float(np.mean([r[m] for r in members])), 3) for m in METRICS}}
            for group, members in groups.items()
        }
        scores[name]["latency_ms"] = round(1000 * float(np.mean(seconds)), 1)
        logger.info(
            "%s: overall PSNR %.2f fMSE %.1f, %.0f ms/image",
            name,
            scores[name]["overall"]["psnr"],
            scores[name]["overall"]["fmse"],
            scores[name]["latency_ms"],
        )
    return scores


def score_cross(methods: dict[str, Any], cases: list) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """method -> mean fg-bg Lab distance (and its change vs the composite); the outputs, for the sheet."""
    from ssh_model.quality_set import lab_stats_distance

    before = [lab_stats_distance(c.composite, c.mask) for c in cases]
    scores, outputs = {}, {}
    for name, method in methods.items():
        outputs[name] = [method(c.composite, c.mask) for c in cases]
        after = [lab_stats_distance(o, c.mask) for o, c in zip(outputs[name], cases, strict=True)]
        change = [(a - b) / b for a, b in zip(after, before, strict=True) if b > 1e-6]
        scores[name] = {"distance": round(float(np.mean(after)), 3), "mean_change": round(float(np.mean(change)), 4)}
    return {"cases": len(cases), "distance_before": round(float(np.mean(before)), 3), "methods": scores}, outputs


def contact_sheet(cases: list, outputs: dict[str, list[np.ndarray]], columns: list[str], path: Path) -> Path:
    """A PNG: one row per case (up to ``SHEET_ROWS``), the composite then each column's output."""
    rows = []
    for i, case in enumerate(cases[:SHEET_ROWS]):
        images = [case.composite] + [outputs[c][i] for c in columns]
        height = SHEET_HEIGHT
        width = round(case.composite.shape[1] * height / case.composite.shape[0])
        tiles = [Image.fromarray(im).resize((width, height), Image.Resampling.LANCZOS) for im in images]
        row = Image.new("RGB", (sum(t.width for t in tiles) + 4 * len(tiles), height), "white")
        for j, tile in enumerate(tiles):
            row.paste(tile, (j * (width + 4), 0))
        rows.append(row)
    header = 18
    sheet = Image.new("RGB", (max(r.width for r in rows), header + sum(r.height + 4 for r in rows)), "white")
    draw = ImageDraw.Draw(sheet)
    column_width = rows[0].width // (len(columns) + 1)
    for j, label in enumerate(["composite", *columns]):
        draw.text((j * column_width + 4, 2), label, fill="black")
    y = header
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def check_targets(graded: dict[str, Any], cross: dict[str, Any], model: str) -> dict[str, Any]:
    """The shipped model's targets (the pretrained-model issue): name -> {value, target, met}."""
    me, ident = graded[model], graded["identity"]
    checks = {
        "overall_psnr_gain_db": (me["overall"]["psnr"] - ident["overall"]["psnr"], ">= 2.0", lambda v: v >= 2.0),
        "overall_fmse_ratio": (me["overall"]["fmse"] / ident["overall"]["fmse"], "<= 0.7", lambda v: v <= 0.7),
        "mild_psnr_gain_db": (me["mild"]["psnr"] - ident["mild"]["psnr"], ">= -0.2", lambda v: v >= -0.2),
        "strong_psnr_gain_db": (me["strong"]["psnr"] - ident["strong"]["psnr"], ">= 4.0", lambda v: v >= 4.0),
        "cross_distance_change": (cross["methods"][model]["mean_change"], "<= -0.30", lambda v: v <= -0.30),
    }
    out = {name: {"value": round(v, 4), "target": t, "met": bool(ok(v))} for name, (v, t, ok) in checks.items()}
    beaten = all(
        me[b][m] > graded[base][b][m] if m == "psnr" else me[b][m] < graded[base][b][m]
        for base in ("reinhard", "histogram")
        for b in ("mild", "medium", "strong")
        for m in ("psnr", "fmse")
    )
    out["beats_reinhard_and_histogram_every_bucket"] = {"value": beaten, "target": "true", "met": beaten}
    return out


def markdown(result: dict[str, Any]) -> str:
    """The README's quality table: one row per method, overall and per bucket, and the cross-photo distance."""
    graded, cross = result["graded"], result["cross"]
    lines = [
        "| method | PSNR | fMSE | PSNR 256 | fMSE 256 | PSNR mild / medium / strong | fMSE mild / medium / strong "
        "| cross fg-bg distance | ms / image |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for name, s in graded.items():
        buckets = " / ".join(f"{s[b]['psnr']:.2f}" for b in ("mild", "medium", "strong"))
        fmses = " / ".join(f"{s[b]['fmse']:.0f}" for b in ("mild", "medium", "strong"))
        c = cross["methods"][name]
        lines.append(
            f"| {name} | {s['overall']['psnr']:.2f} | {s['overall']['fmse']:.1f} | "
            f"{s['overall']['psnr_256']:.2f} | {s['overall']['fmse_256']:.1f} | {buckets} | {fmses} | "
            f"{c['distance']:.2f} ({100 * c['mean_change']:+.0f}%) | {s['latency_ms']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_quality", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        default="pretrained",
        help="comma-separated [label=]URI of models ('pretrained' = the shipped weights; '' = none)",
    )
    parser.add_argument("--photos", default=None, help="the corpus folder (default: $SSH_PHOTO_CORPUS or ../shared/photos)")
    parser.add_argument("--per-photo", type=int, default=2, help="graded composites per holdout photo")
    parser.add_argument("--cross", type=int, default=60, help="cross-photo composites")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from ssh_model.corpus import CorpusMissing, corpus_root

    try:
        root = corpus_root(args.photos)
    except CorpusMissing as err:
        print(f"bench_quality: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    started = time.perf_counter()
    from pipeline.evaluation import methods_for

    models = load_models([s for s in args.models.split(",") if s.strip()])
    methods = methods_for(models)
    cases = graded_cases(root, args.per_photo)
    crosses = cross_cases(root, args.cross)
    logger.info("%d graded and %d cross-photo composites in %.0f s", len(cases), len(crosses), time.perf_counter() - started)
    graded = score_graded(methods, cases)
    cross, outputs = score_cross(methods, crosses)
    results_path = Path(args.results)
    sheet = contact_sheet(crosses, outputs, [*models, "reinhard"], results_path.with_name(SHEET.name))
    result: dict[str, Any] = {
        "setup": {
            "seed": SEED,
            "graded_cases": len(cases),
            "per_photo": args.per_photo,
            "cases_per_bucket": {b: graded["identity"][b]["cases"] for b in ("mild", "medium", "strong")},
            "cross_cases": len(crosses),
            "models": args.models,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "wall_s": round(time.perf_counter() - started, 1),
            "sheet": sheet.name,
        },
        "graded": graded,
        "cross": cross,
    }
    if models:
        first = next(iter(models))
        result["targets"] = {"model": first, **check_targets(graded, cross, first)}
    result["table"] = markdown(result)
    write_results(results_path, result)
    print(result["table"])
    if "targets" in result:
        for name, check in result["targets"].items():
            if isinstance(check, dict):
                print(f"  {name}: {check['value']} (target {check['target']}) {'met' if check['met'] else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
