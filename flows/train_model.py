"""Flow ``train-model``: triplet shards -> Ray Train -> an MLflow run -> a registered candidate -> the gate.

    prefect deployment run train-model/default -p data_root=s3://bucket/ssh -p version=2026-11-25
    ssh-harmonize train --data-root ./data --version v1 --steps 500

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

import hashlib
import json
from dataclasses import asdict
from typing import Any

import mlflow
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.configs import VERSION, TrainModelConfig
from pipeline.ingest import photo_urls
from pipeline.ray_runtime import cluster_gpus
from pipeline.tracking import RunRecorder, git_commit, log_params_once, tracked_run
from pipeline.training import job_for
from pipeline.triplet_versions import BUILD_MARKER, version_root_of
from ssh_model import storage
from ssh_model.settings import get_settings
from tasks.common import run_logger
from tasks.evaluation import evaluate_models
from tasks.registry import promotion_gate_task, register_model_task
from tasks.training import record_evaluations_task, save_model_task, train_model_task


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
    data_root: str | None = None, version: str = VERSION, run_name: str | None = None, config: TrainModelConfig | None = None
) -> dict[str, Any]:
    """Train the SSH network on a triplet version, track it in MLflow, register it and run the gate.

    Args:
        data_root: holds ``triplets/{version}``; training runs, models and the default MLflow store go here.
        version: the triplet version to train on.
        run_name: names the MLflow run and the checkpoint folder; the same name resumes
            (default: derived from version, preset, steps, batch and workers).
        config: how to train, register and gate (``pipeline.configs.TrainModelConfig``; default: its defaults,
            with those decided by the hardware filled in from the Ray cluster).
    """
    settings = get_settings()
    log = run_logger()
    data_root = storage.absolute(data_root or settings.data_root)
    root = version_root_of(data_root, version)
    data_tag = data_version(root)
    gpus = cluster_gpus()
    requested = config or TrainModelConfig()
    config = requested.resolve(gpus, settings)
    selection = tuple(photo_urls(data_root, "val", config.select_photos)) if config.select_photos > 0 else ()
    if config.select_photos > 0 and not selection:
        log.warning("no val-split photos under %s: the last model is kept (no checkpoint selection)", data_root)
    job = job_for(root, config, selection)
    run_name = run_name or f"{version}-{job.model}-s{config.steps}-b{config.batch_size}x{config.num_workers}"
    commit = git_commit()
    tags = {
        "data.version": data_tag,
        "data.uri": root,
        "git.commit": commit,
        "model.preset": str(job.model),
        "model.family": config.model_family,
    }
    with tracked_run(run_name, experiment=config.experiment, data_root=data_root, tags=tags) as run:
        run_id = run.info.run_id
        job_params = {key: value for key, value in job.as_dict().items() if key != "config"}  # logged as config
        log_params_once(run_id, {"config": config.model_dump(), "job": job_params})
        mlflow.log_dict({"requested": requested.model_dump(), "resolved": config.model_dump()}, "config.json")
        recorder = RunRecorder(run_id)
        outcome = train_model_task(
            job,
            run_name=run_name,
            storage_root=storage.join(data_root, "training"),
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            max_failures=config.max_failures,
            resource_wait_s=config.resource_wait_s,
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
            {**metadata, "data_version": data_tag, "git_commit": commit, "train_config": json.dumps(config.model_dump())},
        )
        mlflow.set_tag("model.url", model_url)
        evaluations = evaluate_models(
            {"model": outcome.model},
            triplets=root,
            config=config,
            keep_outputs=True,
        )
        tables = record_evaluations_task(recorder, evaluations, outcome.steps, config.grid_rows)
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
        if config.register_model:
            model_name = config.model_name
            version_tags = {"ssh.run_name": run_name, "data.version": data_tag, "git.commit": commit}
            version_number = register_model_task(model_url, run_id, outcome.steps, model_name, version_tags)
            decision = promotion_gate_task(version_number, config)
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
