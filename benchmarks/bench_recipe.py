"""Benchmark: the training recipe of both model families, tuned by measurement at equal CPU budgets.

    python -m benchmarks.bench_recipe [--cpu-seconds 150] [--parallel 2] [--recipes a,b,...]

Every recipe trains one model (``SSHNet`` or ``ColourNet``) from scratch on dual-LUT triplets of the
six bundled training photos (``flows.demo`` holds out chelsea and flower), one process and one
torch thread each, for the same budget of CPU seconds (``time.process_time``, so a busy shared
machine changes the wall time, not the budget; the step count is calibrated on steps timed after a
warm-up so the learning-rate schedule ends with the budget; ``cpu_s`` in the results is what the
training really used). Then it is scored, with the classical baselines,
on:

- ``val``: triplets of the held-out photos graded by a LUT bank no recipe trains on (the
  harmonization pass ``net(content_a, reference_b)`` vs ``content_b``), 96 px crops;
- ``heldout``: composites of the held-out photos (``ssh_model.composites.evaluation_set``, four seeds,
  mild / medium / strong re-grades with grades the models never saw), harmonized at full resolution
  by ``harmonize`` exactly as users run it.

The levers: family and preset, crop size, batch, learning rate, the loss weights (reconstruction,
harmonization, style consistency), the LUT strength distribution ("full": every grade at
strength 1; "mixed": strength uniform in [0.1, 1]; "mild": strength u^2, mostly gentle grades, so
pairs of near-identical grades teach when to leave colours alone; ``lut_bank``'s distributions),
the share of triplets in the "region" layout (``ssh_model.triplets``), and checkpoint selection
(``select``: one training photo, ``val_photo``, is held out and the model is picked among evenly
spaced checkpoints by its composites, ``pipeline.evaluation.selection_composites``, as train-model
does with the val split). Writes ``benchmarks/results/recipe.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "recipe.json"
VAL_CROP = 96
VAL_PER_PHOTO = 32
TRAIN_BANK_SEED, VAL_BANK_SEED = 0, 999
HELDOUT_SEEDS = (0, 1, 2, 3)
WARMUP_STEPS, CALIBRATION_STEPS = 3, 8  # untimed, then timed steps that set the step count


@dataclass(frozen=True)
class Recipe:
    """One training recipe (see the module docstring for the levers)."""

    model: str  # a preset of ``ssh_model.network.all_presets``
    crop: int = 64
    batch: int = 8
    lr: float = 1e-3
    recon: float = 1.0
    harm: float = 1.0
    style: float = 0.0
    strengths: str = "full"  # "full", "mixed" or "mild"
    region: float = 0.0  # share of triplets in the "region" layout (ssh_model.triplets), the rest "crops"
    per_image: int = 64
    seed: int = 0  # the network's initialisation and the batch order (the data stay the same)
    val_photo: str = ""  # a training photo held out for checkpoint selection (not trained on)
    select: int = 0  # checkpoints scored on val_photo's composites (evenly spaced, + the initial model)


RECIPES: dict[str, Recipe] = {
    "ssh-small": Recipe("small"),
    "ssh-small-mixed": Recipe("small", strengths="mixed"),
    "colour-small": Recipe("colour-small"),
    "colour-small-lr3e-3": Recipe("colour-small", lr=3e-3),
    "colour-small-lr3e-4": Recipe("colour-small", lr=3e-4),
    "colour-small-mixed": Recipe("colour-small", strengths="mixed"),
    "colour-small-mild": Recipe("colour-small", strengths="mild"),
    "colour-small-recon3": Recipe("colour-small", recon=3.0),
    "colour-small-style": Recipe("colour-small", style=0.1),
    "colour-small-crop128": Recipe("colour-small", crop=128),
    "colour-small-batch16": Recipe("colour-small", batch=16),
    "colour-grid-small": Recipe("colour-grid-small"),
    "colour-grid-small-mixed": Recipe("colour-grid-small", strengths="mixed"),
    # Round 2: the levers that helped in round 1, combined (and given to SSH too).
    "colour-grid-small-mild": Recipe("colour-grid-small", strengths="mild"),
    "colour-grid-small-mixed-recon3": Recipe("colour-grid-small", strengths="mixed", recon=3.0),
    "colour-grid-small-mild-recon3": Recipe("colour-grid-small", strengths="mild", recon=3.0),
    "colour-grid-small-mixed-recon3-lr3e-4": Recipe("colour-grid-small", strengths="mixed", recon=3.0, lr=3e-4),
    "colour-small-mild-recon3": Recipe("colour-small", strengths="mild", recon=3.0),
    "ssh-small-mild-recon3": Recipe("small", strengths="mild", recon=3.0),
    # Round 3: a middle reconstruction weight; the best of each family at twice the budget (--cpu-seconds).
    "colour-grid-small-mixed-recon1.5": Recipe("colour-grid-small", strengths="mixed", recon=1.5),
    "colour-grid-small-mild-lr3e-4": Recipe("colour-grid-small", strengths="mild", lr=3e-4),
    # Run-to-run spread of the best recipe (another initialisation and batch order), and SSH given its levers.
    "colour-grid-small-mild-lr3e-4-seed1": Recipe("colour-grid-small", strengths="mild", lr=3e-4, seed=1),
    "colour-grid-small-mild-lr3e-4-seed2": Recipe("colour-grid-small", strengths="mild", lr=3e-4, seed=2),
    "ssh-small-mild-lr3e-4": Recipe("small", strengths="mild", lr=3e-4),
    "ssh-small-mixed-seed1": Recipe("small", strengths="mixed", seed=1),
    # Round 4: triplets laid out as harmonize sees a composite (a foreground region and its background).
    "colour-grid-small-mild-lr3e-4-region0.5": Recipe("colour-grid-small", strengths="mild", lr=3e-4, region=0.5),
    "colour-grid-small-mild-lr3e-4-region1": Recipe("colour-grid-small", strengths="mild", lr=3e-4, region=1.0),
    "colour-small-mild-region0.5": Recipe("colour-small", strengths="mild", region=0.5),
    "ssh-small-mild-lr3e-4-region0.5": Recipe("small", strengths="mild", lr=3e-4, region=0.5),
    # Round 5: early stopping. One training photo (china) is held out, and its composites pick the checkpoint.
    "colour-grid-small-mild-lr3e-4-valchina": Recipe("colour-grid-small", strengths="mild", lr=3e-4, val_photo="china"),
    "colour-grid-small-mild-lr3e-4-select": Recipe(
        "colour-grid-small", strengths="mild", lr=3e-4, val_photo="china", select=12
    ),
    "ssh-small-mild-lr3e-4-select": Recipe("small", strengths="mild", lr=3e-4, val_photo="china", select=12),
    "colour-small-mild-select": Recipe("colour-small", strengths="mild", val_photo="china", select=12),
    "colour-grid-small-mild-lr3e-4-select-seed1": Recipe(
        "colour-grid-small", strengths="mild", lr=3e-4, val_photo="china", select=12, seed=1
    ),
    "colour-grid-small-mild-lr3e-4-select-seed2": Recipe(
        "colour-grid-small", strengths="mild", lr=3e-4, val_photo="china", select=12, seed=2
    ),
    "colour-grid-small-mild-lr1e-4-select": Recipe(
        "colour-grid-small", strengths="mild", lr=1e-4, val_photo="china", select=12
    ),
    "ssh-small-mixed-select": Recipe("small", strengths="mixed", val_photo="china", select=12),
    "colour-grid-small-mild-lr1e-4-select-seed1": Recipe(
        "colour-grid-small", strengths="mild", lr=1e-4, val_photo="china", select=12, seed=1
    ),
    "colour-grid-small-mild-lr1e-4-select-seed2": Recipe(
        "colour-grid-small", strengths="mild", lr=1e-4, val_photo="china", select=12, seed=2
    ),
}


def make_bank(seed: int, distribution: str, count: int = 100) -> list:
    """``count`` grades of bank ``seed`` at strengths drawn from ``distribution`` (``lut_bank``'s)."""
    from ssh_model.lut import lut_bank

    return lut_bank(seed, count=count, size=17, distribution=distribution)


def make_triplets(
    photos: list[np.ndarray], bank: list, per_image: int, crop: int, seed: int, region: float = 0.0
) -> dict[str, np.ndarray]:
    """uint8 (N, S, S, 3) arrays under ``TRIPLET_KEYS`` from ``per_image`` triplets of every photo, a share
    ``region`` of them in the "region" layout."""
    from ssh_model.train import TRIPLET_KEYS
    from ssh_model.triplets import draw_layout, make_triplet

    rng = np.random.default_rng(seed)
    triplets = []
    for photo in photos:
        for _ in range(per_image):
            first, second = (int(i) for i in rng.choice(len(bank), size=2, replace=False))
            triplets.append(
                make_triplet(photo, bank[first], bank[second], rng, crop_size=crop, layout=draw_layout(rng, region))
            )
    return {key: np.stack([getattr(t, key) for t in triplets]) for key in TRIPLET_KEYS}


def photos_of(names: list[str]) -> list[np.ndarray]:
    from ssh_model.images import read_image
    from ssh_model.samples import sample_photo

    return [read_image(sample_photo(name)) for name in names]


def split_names() -> tuple[list[str], list[str]]:
    from flows.demo import HELD_OUT
    from ssh_model.samples import sample_photo_paths

    names = [Path(p).stem for p in sample_photo_paths()]
    return [n for n in names if n not in HELD_OUT], list(HELD_OUT)


def heldout_composites(names: list[str]) -> list:
    from ssh_model.composites import evaluation_set

    photos = dict(zip(names, photos_of(names), strict=True))
    return [
        dataclasses.replace(item, id=f"{item.id}-s{seed}")
        for seed in HELDOUT_SEEDS
        for item in evaluation_set(photos, seed=seed)
    ]


def batches(data: dict[str, np.ndarray], batch: int, seed: int):
    """Random batches forever."""
    rng = np.random.default_rng(seed)
    count = len(next(iter(data.values())))
    while True:
        index = rng.choice(count, size=batch, replace=False)
        yield {key: values[index] for key, values in data.items()}


def calibrated_steps(
    preset: str, data: dict[str, np.ndarray], batch: int, lr: float, losses: Any, cpu_seconds: float
) -> int:
    """How many steps of ``preset`` fit ``cpu_seconds`` of this process's CPU time: a throw-away model is
    timed on ``CALIBRATION_STEPS`` steps after ``WARMUP_STEPS`` untimed ones (allocations, kernel choices)."""
    from ssh_model.network import build_model
    from ssh_model.train import TrainConfig, train

    probe = build_model(preset)
    probe_cfg = TrainConfig(
        steps=WARMUP_STEPS, batch_size=batch, lr=lr, warmup_steps=1, log_every=10**6, seed=0, losses=losses
    )
    train(probe, batches(data, batch, 1), probe_cfg)
    started = time.process_time()
    train(probe, batches(data, batch, 1), dataclasses.replace(probe_cfg, steps=CALIBRATION_STEPS))
    return max(10, int(cpu_seconds / ((time.process_time() - started) / CALIBRATION_STEPS)))


class TimedScoring:
    """Scores ``model`` into ``best`` (a ``pipeline.selection.BestSoFar``) and adds up the CPU time it takes
    after step 0 (scoring during training), which a training budget does not count."""

    def __init__(self, best: Any, model: Any) -> None:
        self.best, self.model, self.cpu_s = best, model, 0.0

    def __call__(self, step: int) -> None:
        began = time.process_time()
        self.best.score(self.model, step)
        if step > 0:
            self.cpu_s += time.process_time() - began


def train_on_budget(recipe: Recipe, data: dict[str, np.ndarray], cpu_seconds: float) -> tuple[Any, dict[str, Any]]:
    """A model trained for about ``cpu_seconds`` of this process's CPU time; (model, facts).

    With ``recipe.select``, the model is scored on the composites of ``recipe.val_photo`` at that many
    evenly spaced steps and at step 0, and the best of those states is returned (early stopping; the CPU
    time of scoring is not counted in ``cpu_s``).
    """
    import torch

    from pipeline.evaluation import selection_composites
    from pipeline.selection import BestSoFar
    from ssh_model.losses import LossConfig
    from ssh_model.network import build_model
    from ssh_model.samples import sample_photo
    from ssh_model.train import TrainConfig, train

    losses = LossConfig(recon=recipe.recon, harm=recipe.harm, style=recipe.style)
    steps = calibrated_steps(recipe.model, data, recipe.batch, recipe.lr, losses, cpu_seconds)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model)
    cfg = TrainConfig(
        steps=steps,
        batch_size=recipe.batch,
        lr=recipe.lr,
        warmup_steps=max(1, steps // 20),
        log_every=max(1, steps // 5),
        sample_every=0,
        losses=losses,
        seed=recipe.seed,
    )
    callback, best, score = None, None, None
    if recipe.select:
        best = BestSoFar(selection_composites([sample_photo(recipe.val_photo)], max_side=None))

        score = TimedScoring(best, model)
        score(0)
        cfg = dataclasses.replace(cfg, log_every=max(1, steps // recipe.select))
        callback = lambda event: score(event.step)  # noqa: E731
    started = time.process_time()
    result = train(model, batches(data, recipe.batch, 2 + 100 * recipe.seed), cfg, callback=callback)
    history = result.history[-max(1, steps // 10) :]
    facts = {
        "steps": steps,
        "final_loss": round(float(np.mean([h["total"] for h in history])), 4),
        "cpu_s": round(time.process_time() - started, 1),
    }
    if best is not None:
        model = best.model
        facts.update(
            cpu_s=round(facts["cpu_s"] - score.cpu_s, 1),
            selected_step=best.step,
            selection_psnr={str(step): round(psnr, 3) for step, psnr in best.scores},
        )
    return model.eval(), facts


def run_recipe(name: str, recipe: Recipe, cpu_seconds: float, val_root: str) -> dict[str, Any]:
    """Train and score one recipe (in a worker process with one torch thread)."""
    import torch

    torch.set_num_threads(1)
    from pipeline.evaluation import evaluate_composites, evaluate_triplets, methods_for

    train_names, heldout = split_names()
    train_names = [n for n in train_names if n != recipe.val_photo]
    data = make_triplets(
        photos_of(train_names), make_bank(TRAIN_BANK_SEED, recipe.strengths), recipe.per_image, recipe.crop, seed=1
    )
    model, facts = train_on_budget(recipe, data, cpu_seconds)
    val = evaluate_triplets({"model": model}, val_root, "val", limit=10**6, baselines=())
    held = evaluate_composites(methods_for({"model": model}, baselines=()), heldout_composites(heldout))
    return {
        "recipe": name,
        **dataclasses.asdict(recipe),
        **facts,
        "val": {k: round(v, 3) for k, v in val.summary()[0].items() if k in ("psnr", "mse", "fmse")},
        "heldout": {k: round(v, 3) for k, v in held.summary()[0].items() if k in ("psnr", "fmse", "psnr_256", "fmse_256")},
        "heldout_by_level": by_level(held),
    }


def by_level(evaluation: Any) -> dict[str, dict[str, float]]:
    """method -> level -> PSNR over the held-out composites of that re-grade strength."""
    out: dict[str, dict[str, float]] = {}
    for row in evaluation.summary(by_level=True):
        out.setdefault(row["method"], {})[row["level"]] = round(row["psnr"], 2)
    return out


def _run(args: tuple) -> dict[str, Any]:
    return run_recipe(*args)


def write_val_triplets(root: str) -> None:
    """Val triplets of the held-out photos (a bank no recipe trains on) as shards under ``root/val``."""
    from ssh_model.shards import ShardWriter, triplet_row
    from ssh_model.triplets import make_triplet

    _, heldout = split_names()
    bank = make_bank(VAL_BANK_SEED, "mixed")
    rng = np.random.default_rng(5)
    with ShardWriter(f"{root}/val/part-00000.parquet", rows_per_group=32) as writer:
        for index, photo in enumerate(photos_of(heldout)):
            for k in range(VAL_PER_PHOTO):
                first, second = (int(i) for i in rng.choice(len(bank), size=2, replace=False))
                triplet = make_triplet(photo, bank[first], bank[second], rng, crop_size=VAL_CROP)
                writer.write(triplet_row(triplet, image_id=f"{index:064x}", split="val", k=k, seed=VAL_BANK_SEED))


def baseline_rows(val_root: str) -> list[dict[str, Any]]:
    from pipeline.evaluation import evaluate_composites, evaluate_triplets, methods_for

    _, heldout = split_names()
    val = {row["method"]: row for row in evaluate_triplets({}, val_root, "val", limit=10**6).summary()}
    evaluation = evaluate_composites(methods_for({}), heldout_composites(heldout))
    held = {row["method"]: row for row in evaluation.summary()}
    levels = by_level(evaluation)
    return [
        {
            "recipe": f"({name})",
            "val": {k: round(val[name][k], 3) for k in ("psnr", "mse", "fmse")},
            "heldout": {k: round(held[name][k], 3) for k in ("psnr", "fmse", "psnr_256", "fmse_256")},
            "heldout_by_level": {"model": levels[name]},
        }
        for name in held
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| recipe | steps | val PSNR | held-out PSNR | held-out fMSE | PSNR mild / medium / strong |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        levels = row["heldout_by_level"]["model"]
        lines.append(
            f"| {row['recipe']} | {row.get('steps', '')} | {row['val']['psnr']:.2f} | "
            f"{row['heldout']['psnr']:.2f} | {row['heldout']['fmse']:.0f} | "
            f"{levels['mild']:.2f} / {levels['medium']:.2f} / {levels['strong']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_recipe")
    parser.add_argument("--cpu-seconds", type=float, default=150.0, help="training budget per recipe")
    parser.add_argument("--parallel", type=int, default=2, help="recipes trained at once (one core each)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names of RECIPES")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    args = parser.parse_args(argv)
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; expected some of {sorted(RECIPES)}")
    os.environ["OMP_NUM_THREADS"] = "1"
    import tempfile

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as val_root:
        write_val_triplets(val_root)
        baselines = baseline_rows(val_root)
        jobs = [(name, RECIPES[name], args.cpu_seconds, val_root) for name in names]
        with multiprocessing.get_context("spawn").Pool(args.parallel, maxtasksperchild=1) as pool:
            rows = pool.map(_run, jobs, chunksize=1)
    rows.sort(key=lambda r: -r["heldout"]["psnr"])
    table = markdown(baselines + rows)
    result = {
        "machine": {"cpus": os.cpu_count(), "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "setup": {
            "cpu_seconds_per_recipe": args.cpu_seconds,
            "val_crop": VAL_CROP,
            "val_triplets": 2 * VAL_PER_PHOTO,
            "heldout_composites": 2 * 3 * len(HELDOUT_SEEDS),
            "wall_s": round(time.perf_counter() - started, 1),
        },
        "baselines": baselines,
        "recipes": rows,
        "table": table,
    }
    write_results(Path(args.results), result)
    print(table)
    return result


if __name__ == "__main__":
    main()
