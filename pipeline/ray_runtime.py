"""The Ray runtime the jobs run on: start or join it, and the environment its workers are given."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ssh_model.settings import Settings

logger = logging.getLogger(__name__)

# Non-secret settings Ray workers need to reach the same storage as the driver: the project's settings
# (not every SSH_* variable: OpenSSH's SSH_AUTH_SOCK and SSH_CONNECTION are not ours) and the S3
# endpoint and region. Credentials are not forwarded: local workers inherit them, cluster workers get
# them from their own environment.
FORWARDED_ENV_NAMES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
# A private one-machine Ray has no nodes to drain: Ray Train's preemption watcher would only poll
# (CPU the training workers need on a small machine). Clusters keep it.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def forwarded_env() -> dict[str, str]:
    """The settings' ``SSH_*`` and the S3 endpoint/region variables of this process, for Ray workers'
    ``runtime_env``."""
    names = {*Settings.env_names(), *FORWARDED_ENV_NAMES}
    return {key: value for key, value in os.environ.items() if key in names}


def ray_init(num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``RAY_ADDRESS``, else start a private local Ray; True when this call did.

    A local start never attaches to some other Ray instance already running on the machine (its
    workers could have another environment); ``num_cpus`` caps a local start (default: all cores).
    The driver's ``SSH_*`` and S3 endpoint settings go to every worker through the job's runtime env.
    """
    import ray  # deferred: forwarded_env is read by processes that never start Ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or "local"
    env = forwarded_env()
    if address == "local":
        env.update(LOCAL_RAY_ENV)
    options: dict = {"runtime_env": {"env_vars": env}, "include_dashboard": False}
    if address == "local" and num_cpus is not None:
        options["num_cpus"] = num_cpus
    ray.init(address=address, **options)
    logger.info("Ray started (%s): %s", address, ray.cluster_resources())
    return True


def cluster_gpus() -> int:
    """GPUs in the Ray cluster (starts or joins Ray)."""
    import ray  # deferred, as in ray_init

    ray_init()
    return int(ray.cluster_resources().get("GPU", 0))


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """``ray_init`` for the block; a Ray this call started is shut down after it, so the job's actors give
    their CPUs back before the next stage (one already running is left as it is)."""
    started = ray_init(num_cpus)
    try:
        yield
    finally:
        if started:
            import ray  # deferred, as in ray_init

            ray.shutdown()


__all__ = ["FORWARDED_ENV_NAMES", "LOCAL_RAY_ENV", "cluster_gpus", "forwarded_env", "ray_init", "ray_session"]
