"""Benchmark: training recipes on the photo corpus at equal CPU budgets, judged by the quality benchmark.

    python -m benchmarks.bench_recipe_corpus [--cpu-seconds 300] [--photos-used 600] [--recipes a,b]

The corpus version of ``bench_recipe``: triplets of ``--photos-used`` photos of the corpus's ``train/``
(crop and region layouts, region foregrounds shaped by the BSDS500 train masks) are made once; every
recipe trains one model from scratch on them for the same budget of CPU seconds, one process and one
torch thread each, with checkpoint selection on composites of ``--select-photos`` other train photos
(``pipeline.evaluation.selection_composites``, as train-model does with its val split). Each model is then
scored on the quality benchmark's graded composites of the ``holdout/`` photos (``bench_quality``, one per
photo here). Writes ``benchmarks/results/recipe-corpus.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "recipe-corpus.json"
PHOTO_SIDE = 384  # photos are shrunk to this long side before triplets are cut (as a cheap ingest would)


@dataclass(frozen=True)
class CorpusRecipe:
    """One recipe: a model preset, the data's grade strengths and layout mix, the optimisation."""

    model: str
    strengths: str = "mild"  # lut_bank distribution: full, mixed or mild
    lr: float = 3e-4
    batch: int = 8
    crop: int = 64
    region: float = 0.5  # share of region-layout triplets
    natural: float = 0.0  # share of triplets whose second grade is the identity (ssh_model.triplets.draw_luts)
    luts: int = 100  # grades in the bank
    recon: float = 1.0
    select: int = 12  # checkpoints scored for selection (evenly spaced, + the initial model)


RECIPES: dict[str, CorpusRecipe] = {
    "colour-grid-small-mild": CorpusRecipe("colour-grid-small"),
    "colour-grid-small-mixed": CorpusRecipe("colour-grid-small", strengths="mixed"),
    "colour-small-mild": CorpusRecipe("colour-small"),
    "colour-small-mixed": CorpusRecipe("colour-small", strengths="mixed"),
    "ssh-small-mild": CorpusRecipe("small"),
    "colour-grid-small-mixed-crops": CorpusRecipe("colour-grid-small", strengths="mixed", region=0.0),
    "colour-grid-small-full": CorpusRecipe("colour-grid-small", strengths="full"),
    # Round 2: a reference that keeps the photo's own colours in half the triplets, a bigger bank.
    "colour-small-mixed-natural": CorpusRecipe("colour-small", strengths="mixed", natural=0.5),
    "colour-small-mixed-natural-1000": CorpusRecipe("colour-small", strengths="mixed", natural=0.5, luts=1000),
}


def shrink(image: np.ndarray, side: int = PHOTO_SIDE) -> np.ndarray:
    from pipeline.evaluation import downscaled

    return downscaled(image, side)


def make_data(
    photo_paths: list[Path], outlines: list[np.ndarray], recipe: CorpusRecipe, per_image: int, seed: int = 1
) -> dict[str, np.ndarray]:
    """uint8 (N, S, S, 3) arrays under ``TRIPLET_KEYS``: ``per_image`` triplets of each photo."""
    from ssh_model.images import read_image
    from ssh_model.lut import lut_bank
    from ssh_model.train import TRIPLET_KEYS
    from ssh_model.triplets import draw_layout, draw_luts, make_triplet

    bank = lut_bank(0, count=recipe.luts, size=17, distribution=recipe.strengths)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[np.ndarray]] = {key: [] for key in TRIPLET_KEYS}
    for path in photo_paths:
        photo = shrink(read_image(str(path)))
        for _ in range(per_image):
            lut_a, lut_b = draw_luts(rng, bank, recipe.natural)
            layout = draw_layout(rng, recipe.region)
            outline = outlines[int(rng.integers(len(outlines)))] if layout == "region" else None
            triplet = make_triplet(photo, lut_a, lut_b, rng, crop_size=recipe.crop, layout=layout, outline=outline)
            for key in TRIPLET_KEYS:
                rows[key].append(getattr(triplet, key))
    return {key: np.stack(values) for key, values in rows.items()}


def train_recipe(
    recipe: CorpusRecipe, data: dict[str, np.ndarray], select_urls: list[str], cpu_seconds: float
) -> tuple[Any, dict[str, Any]]:
    """A model trained for ~``cpu_seconds`` of CPU time, the best of its evenly spaced checkpoints."""
    import torch

    from benchmarks.bench_recipe import TimedScoring, batches, calibrated_steps
    from pipeline.evaluation import selection_composites
    from pipeline.selection import BestSoFar
    from ssh_model.losses import LossConfig
    from ssh_model.network import build_model
    from ssh_model.train import TrainConfig, train

    losses = LossConfig(recon=recipe.recon)
    steps = calibrated_steps(recipe.model, data, recipe.batch, recipe.lr, losses, cpu_seconds)
    torch.manual_seed(0)
    model = build_model(recipe.model)
    best = BestSoFar(selection_composites(select_urls))
    score = TimedScoring(best, model)
    score(0)
    cfg = TrainConfig(
        steps=steps,
        batch_size=recipe.batch,
        lr=recipe.lr,
        warmup_steps=max(1, steps // 20),
        log_every=max(1, steps // recipe.select),
        seed=0,
        losses=losses,
    )
    started = time.process_time()
    train(model, batches(data, recipe.batch, 2), cfg, callback=lambda event: score(event.step))
    return best.model, {
        "steps": steps,
        "selected_step": best.step,
        "select_psnr": round(best.psnr, 3),
        "cpu_s": round(time.process_time() - started - score.cpu_s, 1),
        "selection_curve": {str(s): round(p, 3) for s, p in best.scores},
    }


def run_recipe(
    name: str, recipe: CorpusRecipe, data_path: str, select_urls: list[str], cpu_seconds: float, root: str
) -> dict[str, Any]:
    """Train and score one recipe (in a worker process with one torch thread)."""
    import torch

    torch.set_num_threads(1)
    from benchmarks.bench_quality import graded_cases, score_graded
    from pipeline.evaluation import methods_for

    with np.load(data_path) as loaded:
        data = {key: loaded[key] for key in loaded.files}
    model, facts = train_recipe(recipe, data, select_urls, cpu_seconds)
    scores = score_graded(methods_for({"model": model}), graded_cases(Path(root), per_photo=1))
    return {"recipe": name, **dataclasses.asdict(recipe), **facts, "quality": scores["model"]}


def _run(args: tuple) -> dict[str, Any]:
    return run_recipe(*args)


def markdown(rows: list[dict[str, Any]], baselines: dict[str, Any]) -> str:
    lines = [
        "| recipe | steps | selected | CPU s | PSNR | fMSE | PSNR mild / medium / strong |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, q in baselines.items():
        levels = " / ".join(f"{q[b]['psnr']:.2f}" for b in ("mild", "medium", "strong"))
        lines.append(f"| ({name}) | | | | {q['overall']['psnr']:.2f} | {q['overall']['fmse']:.1f} | {levels} |")
    for row in rows:
        q = row["quality"]
        levels = " / ".join(f"{q[b]['psnr']:.2f}" for b in ("mild", "medium", "strong"))
        lines.append(
            f"| {row['recipe']} | {row['steps']} | {row['selected_step']} | {row['cpu_s']:.0f} | "
            f"{q['overall']['psnr']:.2f} | {q['overall']['fmse']:.1f} | {levels} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_recipe_corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-seconds", type=float, default=300.0, help="training budget per recipe")
    parser.add_argument("--photos-used", type=int, default=600, help="train photos the triplets are cut from")
    parser.add_argument("--per-image", type=int, default=8, help="triplets per photo")
    parser.add_argument("--select-photos", type=int, default=24, help="other train photos for checkpoint selection")
    parser.add_argument("--parallel", type=int, default=2, help="recipes trained at once (one core each)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names of RECIPES")
    parser.add_argument("--photos", default=None, help="the corpus folder (default: $SSH_PHOTO_CORPUS or ../shared/photos)")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; expected some of {sorted(RECIPES)}")
    from ssh_model.corpus import CorpusMissing, corpus_root, photos

    try:
        root = corpus_root(args.photos)
    except CorpusMissing as err:
        print(f"bench_recipe_corpus: {err}", file=sys.stderr)
        return 2
    os.environ["OMP_NUM_THREADS"] = "1"
    from pipeline.triplet_plan import load_outlines

    started = time.perf_counter()
    train_photos = photos(root, "train")
    picked = np.random.default_rng(0).permutation(len(train_photos))
    used = [train_photos[i] for i in picked[: args.photos_used]]
    select_urls = [str(train_photos[i]) for i in picked[args.photos_used : args.photos_used + args.select_photos]]
    outlines = load_outlines(str(root / "masks" / "train"))
    with tempfile.TemporaryDirectory() as tmp:
        jobs, data_files = [], {}
        for name in names:
            recipe = RECIPES[name]
            key = (recipe.strengths, recipe.crop, recipe.region, recipe.natural, recipe.luts)
            if key not in data_files:
                data_files[key] = os.path.join(tmp, f"data-{len(data_files)}.npz")
                np.savez(data_files[key], **make_data(used, outlines, recipe, args.per_image))
            jobs.append((name, recipe, data_files[key], select_urls, args.cpu_seconds, str(root)))
        print(f"triplets ready in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        with multiprocessing.get_context("spawn").Pool(args.parallel, maxtasksperchild=1) as pool:
            rows = pool.map(_run, jobs, chunksize=1)
    from benchmarks.bench_quality import graded_cases, score_graded
    from pipeline.evaluation import methods_for

    baselines = score_graded(methods_for({}), graded_cases(root, per_photo=1))
    rows.sort(key=lambda r: -r["quality"]["overall"]["psnr"])
    table = markdown(rows, baselines)
    write_results(
        args.results,
        {
            "setup": {
                "cpu_seconds_per_recipe": args.cpu_seconds,
                "photos_used": args.photos_used,
                "per_image": args.per_image,
                "select_photos": args.select_photos,
                "photo_side": PHOTO_SIDE,
                "outlines": len(outlines),
                "wall_s": round(time.perf_counter() - started, 1),
            },
            "baselines": baselines,
            "recipes": rows,
            "table": table,
        },
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
