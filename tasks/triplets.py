"""The Prefect tasks of build-triplets: plan (and clean or resume), generate the shards on Ray, publish.

The work itself is ``pipeline.triplets`` and ``pipeline.triplet_versions``; these wrappers add the
task names the UI shows and log through Prefect's run logger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline import triplet_versions, triplets
from pipeline.configs import TripletConfig
from pipeline.triplet_plan import BuildParams, ShardPlan
from pipeline.triplet_versions import Preparation, version_root_of
from pipeline.triplets import run_shard_builders
from tasks.common import run_logger


@task(name="plan-triplet-build", cache_policy=NO_CACHE)
def plan_build(data_root: str, version: str, config: TripletConfig) -> tuple[BuildParams, Preparation]:
    """``pipeline.triplets.plan_build`` with the run's logger."""
    return triplets.plan_build(data_root, version, config, log=run_logger())


@task(name="generate-triplet-shards", cache_policy=NO_CACHE)
def generate_shards(
    plans: Sequence[ShardPlan], params: BuildParams, data_root: str, version: str, num_cpus: int | None = None
) -> list[dict[str, Any]]:
    """Make and write the shards of ``plans`` on Ray (local cores, or the cluster at RAY_ADDRESS)."""
    return run_shard_builders(plans, params, data_root, version_root_of(data_root, version), num_cpus, log=run_logger())


@task(name="publish-triplet-version", cache_policy=NO_CACHE)
def publish_version(data_root: str, version: str, params: BuildParams, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Check every planned shard exists, then write the completion marker (last)."""
    return triplet_versions.publish_version(
        data_root=data_root, version=version, params=params, entries=entries, log=run_logger()
    )
