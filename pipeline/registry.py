"""The MLflow model registry: log, register, the promotion gate, and loading models by URI.

- ``log_model``: inside an active run, logs the network as a pyfunc "model from code"
  (``pipeline/pyfunc_model.py``) with the safetensors weights as its ``weights`` artifact: loading it
  never unpickles anything (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` is our default).
- ``register_candidate``: registers it as a new version of ``ssh-harmonizer`` and points the
  alias ``candidate`` at it.
- ``promotion_gate``: scores the candidate and the current champion on the fixed evaluation set
  (``pipeline.evaluation``) and moves ``champion`` to the candidate only when it beats the champion
  by ``margin`` (in the metric's units); the decision and both scores are tags on the version.
- ``load_registered_model(uri)``: ``models:/ssh-harmonizer@champion``, ``models:/name/3``, ``pretrained``
  (the weights shipped in the package) or a plain ``.safetensors`` URL (any fsspec URL) -> (the network,
  SSHNet or ColourNet, in eval mode, version string).
- ``default_model_uri()``: what inference loads when no model is named.
- ``servable_problem(uri)`` / ``upgrade_version(uri)``: whether ``mlflow models serve`` can answer for a
  version (it needs the signature of ``pipeline.serving``), and re-registering one logged before it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion

# importing pipeline.tracking sets MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false
from pipeline.configs import MODEL_NAME
from pipeline.serving import SIGNATURE, input_example
from pipeline.tracking import configure, store_exists, tracked_run
from ssh_model import storage
from ssh_model.checkpoints import CheckpointError, model_from_bytes
from ssh_model.errors import ModelError, UnknownModelError, classify, redact, storage_error
from ssh_model.pretrained import MODEL_CARD, PRETRAINED_URI, pretrained_path
from ssh_model.settings import get_settings

logger = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"
WEIGHTS_FILE = "model.safetensors"
PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
PIP_REQUIREMENTS = ["ssh-harmonization", "mlflow", "torch", "safetensors", "numpy", "pillow"]
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


# -- logging and registering ------------------------------------------------------------------------


def log_model(weights_url: str, name: str = "model") -> Any:
    """Log ``weights_url`` (a ``save_model`` file) as a no-pickle pyfunc in the active run.

    Returns the ``ModelInfo`` (its ``model_uri`` is what ``register_candidate`` takes).
    """
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, WEIGHTS_FILE)
        with open(local, "wb") as handle:
            handle.write(storage.read_bytes(weights_url))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=PYFUNC_CODE,
            artifacts={"weights": local},
            pip_requirements=PIP_REQUIREMENTS,
            signature=SIGNATURE,
            input_example=input_example(),
        )


def register_candidate(
    model_uri: str, name: str = MODEL_NAME, tags: dict[str, str] | None = None, alias: str = CANDIDATE
) -> ModelVersion:
    """Register ``model_uri`` (from ``log_model``) as a new version of ``name`` with alias ``candidate``."""
    version = mlflow.register_model(model_uri, name, tags=tags)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, alias, version.version)
    logger.info("registered %s version %s (alias %s)", name, version.version, alias)
    return client.get_model_version(name, version.version)


def register_once(
    model_url: str, run_id: str, steps: int, name: str = MODEL_NAME, tags: dict[str, str] | None = None
) -> str:
    """Register the model file of run ``run_id`` at ``steps`` as a version of ``name`` with alias ``candidate``,
    once: a version of this run with the same ``ssh.steps`` is reused (and its ``candidate`` alias set again),
    so a retry or a re-run never registers the same model twice. Returns the version number."""
    existing = [v for v in versions_of_run(run_id, name) if v.tags.get("ssh.steps") == str(steps)]
    if existing:
        version = str(existing[0].version)
        mlflow.MlflowClient().set_registered_model_alias(name, CANDIDATE, version)
        logger.info("run %s at step %d is already registered as %s version %s", run_id, steps, name, version)
        return version
    info = log_model(model_url)
    return str(register_candidate(info.model_uri, name, tags={**(tags or {}), "ssh.steps": str(steps)}).version)


def register_pretrained(name: str = MODEL_NAME, data_root: str | None = None) -> str:
    """Register the weights shipped in the package as a version of ``name`` with their model card, once
    (found again by the weights' hash), and make it the champion when ``name`` has none.

    Returns the version number. Its run is named ``pretrained-<hash>`` (kind "pretrained").
    """
    path = pretrained_path()
    weights = file_version(path.read_bytes())
    configure(data_root)
    client = mlflow.MlflowClient()
    found = [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get("ssh.source") == PRETRAINED_URI and v.tags.get("ssh.weights") == weights
    ]
    if found:
        version = str(found[0].version)
    else:
        with tracked_run(
            f"{PRETRAINED_URI}-{weights}", data_root=data_root, kind=PRETRAINED_URI, tags={"ssh.weights": weights}
        ):
            info = log_model(str(path))
            mlflow.log_artifact(str(MODEL_CARD))
        version = str(
            register_candidate(
                info.model_uri, name, tags={"ssh.source": PRETRAINED_URI, "ssh.weights": weights}, alias=PRETRAINED_URI
            ).version
        )
        client.update_model_version(name, version, description=MODEL_CARD.read_text(encoding="utf-8"))
    try:
        client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        client.set_registered_model_alias(name, CHAMPION, version)
        logger.info("the shipped weights (%s version %s) are the champion", name, version)
    return version


def versions_of_run(run_id: str, name: str = MODEL_NAME) -> list[ModelVersion]:
    """The registered versions of ``name`` logged by run ``run_id`` (newest first)."""
    found = mlflow.MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted(found, key=lambda v: int(v.version), reverse=True)


# -- resolving and loading --------------------------------------------------------------------------


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3"); else None."""
    match = _MODELS_URI.match(uri)
    if match is None:
        return None
    return match["name"], match["alias"], match["version"]


def expand_model_ref(ref: str, name: str = MODEL_NAME) -> str:
    """Shorthands for people: "champion" -> ``models:/name@champion``, "3" -> ``models:/name/3``;
    ``models:/`` URIs, ``pretrained`` and checkpoint URLs pass through."""
    ref = ref.strip()
    if ref == PRETRAINED_URI or ref.startswith("models:/") or "://" in ref or ref.endswith(".safetensors") or "/" in ref:
        return ref
    if ref.isdigit() or ref == "latest":
        return f"models:/{name}/{ref}"
    return f"models:/{name}@{ref}"


def resolve_version(uri: str) -> ModelVersion:
    """The registry version a ``models:/`` URI names (``latest`` = the highest version number).

    Raises ``ssh_model.errors.UnknownModelError`` (a ValueError and a LookupError) naming ``uri`` when the
    registry has no such model, version or alias, and a ``ModelError`` when the registry cannot be reached.
    """
    parsed = parse_models_uri(uri)
    if parsed is None:
        raise UnknownModelError(
            "unknown_model", f"model {redact(uri)}: not a models:/name@alias or models:/name/version URI"
        )
    name, alias, version = parsed
    client = mlflow.MlflowClient()
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise UnknownModelError("unknown_model", f"model {uri}: registered model {name!r} has no versions")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as err:
        where = redact(mlflow.get_registry_uri())
        if classify(err)[0] in ("unreachable", "timeout"):
            raise storage_error(err, where, f"model {uri}: the registry", ModelError) from err
        raise UnknownModelError(
            "unknown_model", f"model {uri}: cannot resolve it in the registry at {where} ({' '.join(err.message.split())})"
        ) from err


def download_weights(version: ModelVersion, folder: str) -> str:
    """Download a version's model into ``folder``; returns the local path of its safetensors weights."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{version.name}/{version.version}", dst_path=folder)
    flavor = mlflow.models.Model.load(local).flavors.get("python_function", {})
    relative = flavor.get("artifacts", {}).get("weights", {}).get("path")
    if relative is None:
        raise ValueError(f"model {version.name} version {version.version} has no 'weights' artifact")
    return os.path.join(local, relative)


def file_version(data: bytes) -> str:
    """The version string of a plain checkpoint file: ``sha256:<first 12 hex>`` of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:12]


def version_label(version: ModelVersion) -> str:
    return f"{version.name}/{version.version}"


def model_bytes(uri: str) -> tuple[bytes, str, str]:
    """The bytes of the ``save_model`` file a URI names, its version string, and how to name it in errors.

    ``pretrained`` -> the shipped weights; ``models:/...`` -> the registered version's ``weights``
    artifact; anything else -> the file at that fsspec URL. Raises ``ModelError`` naming ``uri`` as given
    (see ``load_registered_model``).
    """
    if uri == PRETRAINED_URI:
        data = pretrained_path().read_bytes()
        return data, f"{PRETRAINED_URI}/{file_version(data)}", f"model {uri}"
    if uri.startswith("models:/"):
        if parse_models_uri(uri) is None:
            raise UnknownModelError(
                "unknown_model", f"model {redact(uri)}: not a models:/name@alias or models:/name/version URI"
            )
        if not store_exists():
            raise ModelError(
                "no_registry",
                f"model {uri}: there is no model registry: MLFLOW_TRACKING_URI is not "
                f"set and the data root {redact(get_settings().data_root)} has no MLflow "
                "store (register a model first, or give a .safetensors file)",
            )
        configure()
        version = resolve_version(uri)
        with tempfile.TemporaryDirectory() as folder, open(download_weights(version, folder), "rb") as handle:
            data = handle.read()  # MLflow downloads artifacts to files
        return data, version_label(version), f"model {uri} ({version_label(version)})"
    try:
        data = storage.read_bytes(uri)
    except Exception as err:  # noqa: BLE001 - fsspec raises ValueError/ImportError for schemes, botocore its own
        raise storage_error(err, uri, "model", ModelError) from err
    return data, file_version(data), f"model {redact(uri)}"


def load_registered_model(uri: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, str]:
    """The network a URI names, in eval mode on ``device``, and its version string.

    Args:
        uri: ``models:/ssh-harmonizer@champion`` (any alias), ``models:/name/3``, ``models:/name/latest``,
            ``pretrained`` or a ``.safetensors`` file written by ``save_model`` at any fsspec URL.
        device: where to put the network.
    Returns:
        (model, version): version is ``"name/N"`` for registry URIs, ``"sha256:<12 hex>"`` of the file
        for plain URLs (``pretrained/sha256:...`` for the shipped weights). No pickle is involved.
    Raises:
        ssh_model.errors.ModelError: one line naming ``uri`` as given (never a temporary copy): reason
            ``no_registry`` (a ``models:/`` URI, no ``MLFLOW_TRACKING_URI`` and no store: looking never
            creates one), ``unknown_model``, ``not_a_model``, or a storage reason for the file
            (``missing``, ``unsupported_url`` for an unknown scheme or a backend not installed, ...).
    """
    data, version, name = model_bytes(uri)
    return model_of(data, name, device), version


def model_of(data: bytes, name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``model_from_bytes``, with a file that is not a model checkpoint as the ``not_a_model`` ModelError."""
    try:
        return model_from_bytes(data, name, device)
    except CheckpointError as err:
        raise ModelError("not_a_model", str(err)) from err


def default_model_uri(name: str = MODEL_NAME) -> str:
    """The model inference loads when none is named: ``SSH_MODEL_URI`` when set; else the registry's
    champion when there is a registry (``tracking.store_exists``: looking never creates one) with a
    champion; else the weights shipped in the package (``pretrained``)."""
    configured = get_settings().model_uri
    if configured:
        return configured
    if store_exists():
        configure()
        try:
            mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION)
            return f"models:/{name}@{CHAMPION}"
        except mlflow.exceptions.MlflowException as err:
            logger.info("no %s champion in the registry (%s): using the shipped weights", name, err.error_code)
    return PRETRAINED_URI


# -- serving ---------------------------------------------------------------------------------------


def servable_problem(uri: str) -> str | None:
    """Why ``mlflow models serve`` cannot answer image requests for the ``models:/`` URI, or None when it
    can: a version logged without the serving signature gets base64 text instead of image bytes."""
    version = resolve_version(uri)
    info = mlflow.models.get_model_info(f"models:/{version.name}/{version.version}")
    if info.signature is None or info.signature.inputs != SIGNATURE.inputs:
        return (
            f"model {uri} ({version_label(version)}) was registered without the serving signature, so the "
            f"scoring server would pass it base64 text instead of images; register its weights again with "
            f"`ssh-harmonize upgrade-model {uri}`"
        )
    return None


def upgrade_version(uri: str, name: str = MODEL_NAME) -> str:
    """Register the weights of the version ``uri`` names again, logged with the serving signature, as a new
    version with the same tags and description; every alias that pointed at the old version moves to it.
    Returns the new version number."""
    old = resolve_version(uri)
    client = mlflow.MlflowClient()
    aliases = list(old.aliases)
    with tempfile.TemporaryDirectory() as folder:
        weights = download_weights(old, folder)
        with tracked_run(
            f"upgrade-{old.name}-{old.version}", kind="upgrade", tags={"ssh.upgraded_from": version_label(old)}
        ):
            info = log_model(weights)
    new = mlflow.register_model(info.model_uri, old.name, tags={**old.tags, "ssh.upgraded_from": str(old.version)})
    if old.description:
        client.update_model_version(old.name, new.version, description=old.description)
    for alias in aliases:
        client.set_registered_model_alias(old.name, alias, new.version)
    logger.info(
        "re-registered %s as version %s with the serving signature (aliases %s moved)",
        version_label(old),
        new.version,
        ", ".join(aliases) or "none",
    )
    return str(new.version)


__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "MODEL_NAME",
    "default_model_uri",
    "download_weights",
    "expand_model_ref",
    "file_version",
    "load_registered_model",
    "log_model",
    "model_bytes",
    "model_of",
    "parse_models_uri",
    "register_candidate",
    "register_pretrained",
    "resolve_version",
    "servable_problem",
    "upgrade_version",
    "version_label",
    "versions_of_run",
]
