"""Flow ``train-model``: triplet shards -> Ray Train -> an MLflow run -> a registered candidate -> the gate.

    prefect deployment run train-model/default -p data_root=s3://bucket/ssh -p version=2026-11-25
    python -m flows.train_model --data-root ./data --version v1 --steps 500

1. Check the triplet version is complete (``build-triplets`` wrote its ``manifest.json``).
2. Start (or, for the same run name, resume) the MLflow run: the configuration as params, the data
   version and git commit as tags.
3. Train on Ray Train (``pipeline.training``): DDP workers stream their part of the shards; loss
   curves, throughput and sample grids go to MLflow as they arrive, a progress line per
   ``log_every`` steps to the flow's log; checkpoints every ``checkpoint_every`` steps to
   ``{data_root}/training/{run_name}``, from which a failed worker or a re-run resumes. At the
   start and at every checkpoint the model is scored on composites of up to ``select_photos``
   photos of the val split (never trained on), and the best of those states is the run's model
   (``pipeline.selection``: early stopping).
4. Save that model to ``{data_root}/models/{run_name}/model.safetensors``.
5. Evaluate it and the identity / Reinhard / histogram baselines on the validation triplets and
   on the fixed evaluation set, and record that: metrics and table artifacts, a side-by-side grid.
6. Register it as a version of ``ssh-harmonizer`` with alias ``candidate``; the promotion gate
   moves ``champion`` to it when it beats the champion by ``gate_margin`` on the fixed set.

Each step is its own Prefect task (train-ssh-model, save-model, evaluate-models, record-evaluations,
register-model, promotion-gate), so the UI shows the stages; only save and register retry (storage I/O).

Presets: ``full`` (the released 15.2 M-parameter network) on GPUs, ``small`` on CPUs (``auto``).
``model_family="colour"`` trains ``ColourNet`` instead (``ssh_model.colour_net``: a network that
predicts a colour transform), with the same data, losses, tracking, registry and gate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from typing import Any

import mlflow
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.ingest import photo_urls
from pipeline.ray_runtime import cluster_gpus
from pipeline.registry import MODEL_NAME
from pipeline.tracking import EXPERIMENT, RunRecorder, git_commit, log_params_once, tracked_run
from pipeline.training import default_job
from pipeline.training_worker import TrainingJob
from pipeline.triplet_versions import BUILD_MARKER, version_root_of
from ssh_model import storage
from ssh_model.network import preset_name
from ssh_model.settings import get_settings
from tasks.common import run_logger
from tasks.evaluation import evaluate_models
from tasks.registry import promotion_gate_task, register_model_task
from tasks.training import record_evaluations_task, save_model_task, train_model_task

# Defaults per kind of worker: (preset, steps, batch per worker, loader workers per worker).
GPU_DEFAULTS = ("full", 20_000, 32, 8)
CPU_DEFAULTS = ("small", 2_000, 8, 0)


def data_version(root: str) -> str:
    """``<version>@<sha256 of its manifest.json, 12 hex>``; raises when the version is not complete."""
    marker = storage.join(root, BUILD_MARKER)
    if not storage.exists(marker):
        raise FileNotFoundError(
            f"{root} has no {BUILD_MARKER}: the triplet version is missing or incomplete (run build-triplets for it first)"
        )
    digest = hashlib.sha256(storage.read_bytes(marker)).hexdigest()[:12]
    return f"{root.rstrip('/').rsplit('/', 1)[-1]}@{digest}"


def summary_markdown(result: dict[str, Any], tables: dict[str, str]) -> str:
    lines = [
        f"## train-model `{result['run_name']}`",
        "",
        f"- steps: {result['steps']} (attempts started at {result['start_steps']})",
        f"- model: `{result['model_url']}`",
        f"- MLflow run: `{result['run_id']}`",
    ]
    gate = result.get("gate")
    if gate:
        lines.append(
            f"- registered: `{result['registered_version']}`; gate: "
            f"{'promoted to champion' if gate['promoted'] else 'refused'} ({gate['reason']})"
        )
    for name, table in tables.items():
        lines += ["", f"### {name} set", "", table]
    return "\n".join(lines)


@flow(name="train-model")
def train_model(
    data_root: str | None = None,
    version: str = "v1",
    run_name: str | None = None,
    preset: str = "auto",
    model_family: str = "ssh",
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float = 2e-4,
    warmup_steps: int | None = None,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
    loader_workers: int | None = None,
    threads: int = 1,
    checkpoint_every: int = 200,
    log_every: int = 20,
    sample_every: int = 200,
    max_failures: int = 2,
    seed: int | None = None,
    experiment: str = EXPERIMENT,
    register_model: bool = True,
    model_name: str = MODEL_NAME,
    gate_metric: str = "psnr",
    gate_margin: float = 0.1,
    eval_max_side: int | None = None,
    eval_photos: int | None = None,
    val_limit: int = 256,
    select_photos: int = 64,
    resource_wait_s: float | None = 120.0,
) -> dict[str, Any]:
    """Train the SSH network on a triplet version, track it in MLflow, register it and run the gate.

    Args:
        data_root: holds ``triplets/{version}``; training runs, models and the default MLflow store go here.
        version: the triplet version to train on.
        run_name: names the MLflow run and the checkpoint folder; the same name resumes
            (default: derived from version, preset, steps, batch and workers).
        preset: "full", "small", "tiny" or "auto" (full on GPUs, small on CPUs); the colour family also
            has "grid-small" (a 4x4 grid of transforms).
        model_family: "ssh" (SSHNet, predicts pixels) or "colour" (ColourNet, predicts a colour transform).
        steps, batch_size: optimizer steps and triplets per worker per step (defaults by hardware).
        lr, warmup_steps: peak learning rate and its linear warm-up (default: 5% of the steps).
        num_workers: training workers (default: every GPU, else 2 on CPU).
        use_gpu: default: when the Ray cluster has GPUs.
        loader_workers: DataLoader processes per worker (default 8 per GPU worker, 0 on CPU).
        threads: torch CPU threads per worker; each worker reserves ``threads + loader_workers`` CPUs.
        checkpoint_every, log_every, sample_every: steps between checkpoints, progress lines and sample grids.
        max_failures: worker failures to recover from (from the last checkpoint).
        seed: the training seed (default: ``SSH_SEED``).
        experiment: the MLflow experiment.
        register_model: register the model and run the promotion gate.
        model_name: the registered model's name.
        gate_metric, gate_margin: the gate's metric on the fixed set and the margin to beat the champion by.
        eval_max_side, eval_photos: shrink the fixed evaluation set (None = the reference set).
        val_limit: validation triplets to evaluate on.
        select_photos: how many val-split photos' composites pick the returned model among the
            checkpoints (0, or no val photos: the last model).
        resource_wait_s: how long to wait for free CPUs/GPUs before refusing to start.
    """
    settings = get_settings()
    log = run_logger()
    data_root = storage.absolute(data_root or settings.data_root)
    root = version_root_of(data_root, version)
    data_tag = data_version(root)
    gpus = cluster_gpus()
    use_gpu = gpus > 0 if use_gpu is None else use_gpu
    auto_preset, auto_steps, auto_batch, auto_loaders = GPU_DEFAULTS if use_gpu else CPU_DEFAULTS
    preset = preset_name(model_family, auto_preset if preset == "auto" else preset)
    steps = steps or auto_steps
    batch_size = batch_size or auto_batch
    num_workers = num_workers or (max(1, gpus) if use_gpu else 2)
    loader_workers = auto_loaders if loader_workers is None else loader_workers
    run_name = run_name or f"{version}-{preset}-s{steps}-b{batch_size}x{num_workers}"
    selection = tuple(photo_urls(data_root, "val", select_photos)) if select_photos > 0 else ()
    if select_photos > 0 and not selection:
        log.warning("no val-split photos under %s: the last model is kept (no checkpoint selection)", data_root)
    job: TrainingJob = default_job(
        root,
        preset,
        steps,
        batch_size,
        lr=lr,
        seed=settings.seed if seed is None else seed,
        warmup_steps=warmup_steps if warmup_steps is not None else max(1, steps // 20),
        log_every=log_every,
        sample_every=sample_every,
        checkpoint_every=checkpoint_every,
        loader_workers=loader_workers,
        threads=threads,
        select_photos=selection,
    )
    commit = git_commit()
    tags = {
        "data.version": data_tag,
        "data.uri": root,
        "git.commit": commit,
        "model.preset": str(preset),
        "model.family": model_family,
    }
    with tracked_run(run_name, experiment=experiment, data_root=data_root, tags=tags) as run:
        run_id = run.info.run_id
        log_params_once(
            run_id,
            {
                "job": job.as_dict(),
                "num_workers": num_workers,
                "use_gpu": use_gpu,
                "max_failures": max_failures,
                "gate": {"metric": gate_metric, "margin": gate_margin},
            },
        )
        recorder = RunRecorder(run_id)
        outcome = train_model_task(
            job,
            run_name=run_name,
            storage_root=storage.join(data_root, "training"),
            num_workers=num_workers,
            use_gpu=use_gpu,
            max_failures=max_failures,
            resource_wait_s=resource_wait_s,
            on_event=recorder.record,
        )
        recorder.metrics(
            {
                "train/steps": outcome.steps,
                "train/seconds": outcome.seconds,
                "train/samples_per_s": outcome.samples_per_s,
                "train/attempts": len(outcome.start_steps),
            },
            outcome.steps,
        )
        model_step = outcome.steps if outcome.selected_step is None else outcome.selected_step
        if outcome.selected_step is not None:
            mlflow.set_tags(
                {"model.selected_step": str(outcome.selected_step), "model.select_psnr": f"{outcome.selected_psnr:.3f}"}
            )
        metadata = {"run_id": run_id, "run_name": run_name, "steps": str(outcome.steps), "model_step": str(model_step)}
        model_url = save_model_task(
            outcome.model,
            storage.join(data_root, "models", run_name, "model.safetensors"),
            {**metadata, "data_version": data_tag, "git_commit": commit},
        )
        mlflow.set_tag("model.url", model_url)
        evaluations = evaluate_models(
            {"model": outcome.model},
            triplets=root,
            eval_max_side=eval_max_side,
            eval_photos=eval_photos,
            val_limit=val_limit,
            keep_outputs=True,
        )
        tables = record_evaluations_task(recorder, evaluations, outcome.steps)
        result: dict[str, Any] = {
            "run_name": run_name,
            "run_id": run_id,
            "steps": outcome.steps,
            "start_steps": outcome.start_steps,
            "model_url": model_url,
            "checkpoint": outcome.checkpoint_path,
            "data_version": data_tag,
            "samples_per_s": outcome.samples_per_s,
            "model_step": model_step,
            "evaluation": {k: v.summary() for k, v in evaluations.items()},
        }
        if register_model:
            version_tags = {"ssh.run_name": run_name, "data.version": data_tag, "git.commit": commit}
            version_number = register_model_task(model_url, run_id, outcome.steps, model_name, version_tags)
            decision = promotion_gate_task(
                version_number,
                name=model_name,
                metric=gate_metric,
                margin=gate_margin,
                eval_max_side=eval_max_side,
                eval_photos=eval_photos,
            )
            mlflow.set_tags(
                {
                    "registry.version": f"{model_name}/{version_number}",
                    "gate.decision": "promoted" if decision.promoted else "refused",
                }
            )
            result.update(registered_version=f"{model_name}/{version_number}", gate=asdict(decision))
    create_markdown_artifact(
        summary_markdown(result, tables), key="train-model-summary", description="train-model run summary"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.train_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--model-family", default="ssh", choices=("ssh", "colour"))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--no-register", action="store_true")
    args = parser.parse_args(argv)
    result = train_model(
        data_root=args.data_root,
        version=args.version,
        run_name=args.run_name,
        preset=args.preset,
        model_family=args.model_family,
        steps=args.steps,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        checkpoint_every=args.checkpoint_every,
        register_model=not args.no_register,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "evaluation"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
