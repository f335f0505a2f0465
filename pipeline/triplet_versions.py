"""A triplet version on storage: its root, the build's leftovers cleaned or kept on a rerun, the shard
entries, and the completion marker (``manifest.json``) written last by ``publish_version``.

    {data_root}/triplets/{version}/_build.json                  the parameters of the build in progress
    {data_root}/triplets/{version}/{split}/part-{NNNNN}.parquet  shards (schema: ssh_model.shards)
    {data_root}/triplets/{version}/manifest.json                 written last: the version is complete
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.triplet_plan import BuildParams, ShardPlan
from ssh_model import storage
from ssh_model.shards import schema_doc, shard_info

logger = logging.getLogger(__name__)


BUILD_MARKER = "manifest.json"
BUILD_PARAMS = "_build.json"


class VersionConflict(RuntimeError):
    """A complete version exists with other parameters (pick a new version, or overwrite)."""


# -- the version ------------------------------------------------------------------------------------


def version_root_of(data_root: str, version: str) -> str:
    if not version or "/" in version or version.startswith((".", "_")):
        raise ValueError(f"bad version name {version!r}: one path segment, not starting with '.' or '_'")
    return storage.join(data_root, "triplets", version)


def read_json(url: str) -> dict | None:
    return json.loads(storage.read_bytes(url)) if storage.exists(url) else None


def write_json(url: str, payload: dict) -> None:
    storage.write_bytes_atomic(url, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


def remove_tree(url: str) -> None:
    fs, path = storage.filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.invalidate_cache()


def _files_under(url: str) -> list[str]:
    """Paths (relative to ``url``) of every file under it, hidden and temporary ones included."""
    fs, path = storage.filesystem(url)
    fs.invalidate_cache()
    if not fs.exists(path):
        return []
    root = path.rstrip("/") + "/"
    return sorted(p[len(root) :] for p in fs.find(path) if p.startswith(root))


@dataclass
class Preparation:
    """What is left to do for a version: ``complete`` (the marker), or the shards kept and still to build."""

    complete: dict | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)
    todo: list[ShardPlan] = field(default_factory=list)


def expected_groups(plan: ShardPlan, params: BuildParams) -> list[int]:
    rows = len(plan.image_ids) * params.per_image
    full, rest = divmod(rows, params.rows_per_group)
    return [params.rows_per_group] * full + ([rest] if rest else [])


def prepare_version(
    version_root: str,
    params: BuildParams,
    plans: Sequence[ShardPlan],
    overwrite: bool,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> Preparation:
    """Decide what to build: nothing (complete), or the missing shards after cleaning up leftovers."""
    log = log or logger
    marker = read_json(storage.join(version_root, BUILD_MARKER))
    if marker is not None:
        if marker.get("params") == params.as_dict() and not overwrite:
            return Preparation(complete=marker)
        if not overwrite:
            changed = sorted(k for k, v in params.as_dict().items() if marker.get("params", {}).get(k) != v)
            raise VersionConflict(
                f"{version_root} is complete with other parameters ({', '.join(changed)} "
                f"differ); choose a new version or pass overwrite=True"
            )
        log.info("overwrite: removing the complete version %s", version_root)
        fs, path = storage.filesystem(storage.join(version_root, BUILD_MARKER))
        fs.rm(path)  # first: an interrupted rebuild must never look complete
    previous = read_json(storage.join(version_root, BUILD_PARAMS))
    files = _files_under(version_root)
    if overwrite or previous != params.as_dict():
        if files:
            log.info("removing %d files of an earlier or interrupted build under %s", len(files), version_root)
            remove_tree(version_root)
        write_json(storage.join(version_root, BUILD_PARAMS), params.as_dict())
        return Preparation(todo=list(plans))
    by_path = {plan.path: plan for plan in plans}
    prepared = Preparation()
    for path in files:
        if path == BUILD_PARAMS:
            continue
        plan = by_path.get(path)
        url = storage.join(version_root, path)
        try:
            info = shard_info(url) if plan is not None else None
        except (OSError, ValueError):  # not a readable Parquet file (ArrowInvalid is a ValueError)
            info = None
        if plan is not None and info is not None and info.row_groups == expected_groups(plan, params):
            prepared.kept.append(shard_entry(plan, info))
            continue
        log.info("removing leftover %s", url)
        fs, inner = storage.filesystem(url)
        fs.rm(inner)
    done = {entry["path"] for entry in prepared.kept}
    prepared.todo = [plan for plan in plans if plan.path not in done]
    log.info("resuming %s: %d shards kept, %d to build", version_root, len(prepared.kept), len(prepared.todo))
    return prepared


def shard_entry(plan: ShardPlan, info: Any, seconds: float = 0.0, cpu_seconds: float = 0.0) -> dict[str, Any]:
    """A shard's entry in the build (and, less the timings, in the version's manifest): what ``plan`` made,
    as its file's footer (``ssh_model.shards.shard_info``) or its writer says."""
    return {
        "path": plan.path,
        "split": plan.split,
        "images": len(plan.image_ids),
        "rows": int(info.rows),
        "row_groups": [int(n) for n in info.row_groups],
        "bytes": int(info.bytes),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
    }


def marker_payload(version: str, params: BuildParams, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The completion marker: parameters, counts per split, every file, the schema."""
    files = sorted(
        ({k: e[k] for k in ("path", "split", "images", "rows", "row_groups", "bytes")} for e in entries),
        key=lambda e: e["path"],
    )
    counts: dict[str, dict[str, int]] = {}
    for entry in files:
        split = counts.setdefault(entry["split"], {"files": 0, "images": 0, "triplets": 0, "bytes": 0})
        split["files"] += 1
        split["images"] += entry["images"]
        split["triplets"] += entry["rows"]
        split["bytes"] += entry["bytes"]
    triplets = sum(c["triplets"] for c in counts.values())
    total_bytes = sum(c["bytes"] for c in counts.values())
    return {
        "kind": "ssh-triplets",
        "version": version,
        "params": params.as_dict(),
        "counts": counts,
        "triplets": triplets,
        "bytes": total_bytes,
        "bytes_per_triplet": math.ceil(total_bytes / triplets) if triplets else 0,
        "files": files,
        "schema": schema_doc(),
    }


def publish_version(
    data_root: str,
    version: str,
    params: BuildParams,
    entries: Sequence[dict[str, Any]],
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> dict[str, Any]:
    """Check every planned shard exists, then write the completion marker (last)."""
    root = version_root_of(data_root, version)
    payload = marker_payload(version, params, entries)
    for entry in payload["files"]:
        if not storage.exists(storage.join(root, entry["path"])):
            raise RuntimeError(f"shard {entry['path']} is missing under {root}; the version is not complete")
    write_json(storage.join(root, BUILD_MARKER), payload)
    log.info(
        "version %s complete: %d triplets in %d files (%s), %d bytes per triplet",
        root,
        payload["triplets"],
        len(payload["files"]),
        ", ".join(f"{k} {v['triplets']}" for k, v in sorted(payload["counts"].items())),
        payload["bytes_per_triplet"],
    )
    return payload
