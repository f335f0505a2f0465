"""MLflow tracking: where the store is, and the one place runs start and end.

Where (``tracking_uri``): ``MLFLOW_TRACKING_URI`` when set (e.g. the ``mlflow server`` of the local
stack); otherwise an embedded SQLite store, ``{data_root}/mlflow/mlflow.db`` for a local data root.
SQLite cannot live on object storage, so for an ``s3://`` data root the store is
``~/.cache/ssh-harmonization/mlflow/mlflow.db`` on this machine (said in a log line), while the
artifacts still go under ``{data_root}/mlflow/artifacts``. The model registry uses the same store.

Safety default: ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` is set (``os.environ.setdefault``)
when this module is imported, before any MLflow use; our models load without pickle
(``pipeline.pyfunc_model``).

Runs (``tracked_run``): a training run is found again by its name (tag ``ssh.run_name``), so a
re-run of a flow with the same run name continues the same MLflow run. ``RunRecorder`` logs worker
events (losses, throughput, sample grids) from any thread with an explicit run id.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag

from pipeline.configs import EXPERIMENT
from ssh_model import storage
from ssh_model.settings import get_settings

# MLflow reads this when a model is loaded (not at import): set before anything here loads one.
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

logger = logging.getLogger(__name__)

RUN_NAME_TAG = "ssh.run_name"
KIND_TAG = "ssh.kind"
CACHE_DIR = Path.home() / ".cache" / "ssh-harmonization"
MAX_PARAM_LENGTH = 6000


def _local_root(data_root: str) -> str | None:
    """The local folder of a local data root (``file://`` stripped), else None."""
    if storage.protocol_of(data_root) != "file":
        return None
    return os.path.abspath(data_root[len("file://") :] if data_root.startswith("file://") else data_root)


def store_exists(data_root: str | None = None) -> bool:
    """Whether there is a store to ask: ``MLFLOW_TRACKING_URI`` is set or the embedded SQLite file exists
    (asking never creates one)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return True
    local = _local_root(data_root or get_settings().data_root)
    folder = CACHE_DIR / "mlflow" if local is None else Path(local) / "mlflow"
    return (folder / "mlflow.db").is_file()


def tracking_uri(data_root: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store for ``data_root`` (see module doc)."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    data_root = data_root or get_settings().data_root
    local = _local_root(data_root)
    if local is None:
        folder = CACHE_DIR / "mlflow"
        logger.info(
            "data root %s is not a local folder: the MLflow store is the local SQLite file %s "
            "(set MLFLOW_TRACKING_URI to share one)",
            data_root,
            folder / "mlflow.db",
        )
    else:
        folder = Path(local) / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_root(data_root: str | None = None) -> str:
    """Where new experiments keep artifacts: ``{data_root}/mlflow/artifacts`` (a file URI when local)."""
    data_root = data_root or get_settings().data_root
    local = _local_root(data_root)
    if local is None:
        return storage.join(data_root, "mlflow", "artifacts")
    return Path(local, "mlflow", "artifacts").as_uri()


def configure(data_root: str | None = None) -> str:
    """Point MLflow (tracking and registry) at our store; returns the tracking URI."""
    uri = tracking_uri(data_root)
    endpoint = get_settings().s3_endpoint_url
    if endpoint:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", endpoint)  # MLflow's S3 artifact client (boto3)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str = EXPERIMENT, data_root: str | None = None) -> str:
    """The id of experiment ``name``, created when missing: with our artifact root under the data root on
    the embedded store; with the server's own artifact store when tracking goes to an MLflow server (so
    every machine that talks to the server sees the artifacts)."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    served = mlflow.get_tracking_uri().startswith(("http://", "https://"))
    try:
        return client.create_experiment(name, artifact_location=None if served else artifact_root(data_root))
    except mlflow.exceptions.MlflowException:  # created meanwhile by someone else
        return client.get_experiment_by_name(name).experiment_id


def find_run(run_name: str, experiment_id: str) -> Any | None:
    """The latest run of ``experiment_id`` tagged with ``run_name``, or None."""
    escaped = run_name.replace("'", "\\'")
    runs = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{escaped}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def git_commit(folder: str | None = None) -> str:
    """The git commit of the code (``+dirty`` when there are local changes), or "unknown"."""
    folder = folder or str(Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "") if commit else "unknown"


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> ``{"a.b": "value"}`` strings (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def log_params_once(run_id: str, params: Mapping[str, Any]) -> None:
    """Log params; on a resumed run, values that changed are kept as tags ``resumed.<name>`` instead
    (MLflow params are immutable)."""
    client = mlflow.MlflowClient()
    existing = client.get_run(run_id).data.params
    flat = flatten_params(params)
    new = [Param(k, v) for k, v in flat.items() if k not in existing]
    changed = [RunTag(f"resumed.{k}", v) for k, v in flat.items() if k in existing and existing[k] != v]
    for start in range(0, len(new), 100):
        client.log_batch(run_id, params=new[start : start + 100])
    if changed:
        client.log_batch(run_id, tags=changed)
        names = ", ".join(t.key[len("resumed.") :] for t in changed)
        logger.info("run %s resumed with changed parameters: %s", run_id, names)


@contextmanager
def tracked_run(
    run_name: str,
    *,
    experiment: str = EXPERIMENT,
    data_root: str | None = None,
    tags: Mapping[str, str] | None = None,
    resume: bool = True,
    kind: str = "training",
) -> Iterator[Any]:
    """Start (or resume, by name) an MLflow run; ends it FINISHED, or FAILED when the block raises.

    Args:
        run_name: the run's name; with ``resume`` an existing run of that name is continued.
        experiment: the MLflow experiment (created under our artifact root when missing).
        data_root: locates the embedded store and the artifacts (default: ``SSH_DATA_ROOT``).
        tags: set on the run (e.g. data version, git commit).
        resume: continue the latest run with this name instead of starting a new one.
        kind: the ``ssh.kind`` tag ("training", "comparison").
    Yields:
        the active ``mlflow.ActiveRun``.
    """
    uri = configure(data_root)
    experiment_id = ensure_experiment(experiment, data_root)
    previous = find_run(run_name, experiment_id) if resume else None
    all_tags = {RUN_NAME_TAG: run_name, KIND_TAG: kind, **(tags or {})}
    if previous is not None:
        run = mlflow.start_run(run_id=previous.info.run_id)
        mlflow.set_tags(all_tags)
        logger.info("resuming MLflow run %s (%s) in %s", run.info.run_id, run_name, uri)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags)
        logger.info("MLflow run %s (%s) in %s", run.info.run_id, run_name, uri)
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


class RunRecorder:
    """Logs training events to one MLflow run, from any thread (explicit run id, no fluent state).

    ``record(event)`` takes the events of ``pipeline.training`` (start / progress / checkpoint):
    progress events become metrics ``loss/<term>``, ``lr``, ``samples_per_s``, ``eta_s`` at their step,
    and their sample grid (when present) a step image under the key ``samples`` (columns: content,
    reference, output, pseudo ground truth).
    """

    def __init__(self, run_id: str, tracking: str | None = None) -> None:
        self.run_id = run_id
        self.client = mlflow.MlflowClient(tracking_uri=tracking or mlflow.get_tracking_uri())
        self._lock = threading.Lock()

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        ms = int(mlflow.utils.time.get_current_time_millis())
        batch = [Metric(k, float(v), ms, int(step)) for k, v in values.items() if math.isfinite(float(v))]
        with self._lock:
            self.client.log_batch(self.run_id, metrics=batch)

    def image(self, image: Any, key: str, step: int) -> None:
        with self._lock:
            self.client.log_image(self.run_id, image, key=key, step=int(step))

    def record(self, event: Mapping[str, Any]) -> None:
        if event.get("kind") == "progress":
            step = int(event["step"])
            values = {f"loss/{k}": v for k, v in event["losses"].items()}
            values.update(lr=event["lr"], samples_per_s=event["samples_per_s"], eta_s=event["eta_s"])
            self.metrics(values, step)
            if event.get("grid") is not None:
                self.image(event["grid"], "samples", step)
        elif event.get("kind") == "start":
            self.metrics({"resumed_from_step": event["step"]}, int(event["step"]))
        elif event.get("kind") == "checkpoint":
            self.metrics({"checkpoint_step": event["step"]}, int(event["step"]))
        elif event.get("kind") == "select":
            self.metrics({"select/psnr": event["select_psnr"]}, int(event["step"]))


def log_rows(rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
    """Rows as table artifacts of the active run: ``<stem>.json`` (mlflow.log_table) and ``<stem>.csv``."""
    import pandas as pd  # deferred: only tables of rows need pandas (MLflow's log_table)

    frame = pd.DataFrame(list(rows))
    stem = artifact_file.removesuffix(".json").removesuffix(".csv")
    mlflow.log_table(frame, artifact_file=f"{stem}.json")
    mlflow.log_text(frame.to_csv(index=False), f"{stem}.csv")


__all__ = [
    "CACHE_DIR",
    "EXPERIMENT",
    "KIND_TAG",
    "RUN_NAME_TAG",
    "RunRecorder",
    "artifact_root",
    "configure",
    "ensure_experiment",
    "find_run",
    "flatten_params",
    "git_commit",
    "log_params_once",
    "log_rows",
    "tracked_run",
    "tracking_uri",
]
