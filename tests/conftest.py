"""Session fixtures shared by the whole suite: a real S3 server, Prefect's test harness, a local Ray.

Each starts only when a test asks for it, once per session:
- ``s3_server``: SeaweedFS on loopback (``infra.s3_server``); sets ``AWS_ENDPOINT_URL``, the keys,
  the region and ``SSH_S3_ENDPOINT_URL`` for the session, so s3fs, pyarrow (through fsspec) and
  subprocesses all reach it. ``s3_bucket`` is a bucket on it, ``s3_prefix`` a fresh prefix per test.
- ``prefect_harness``: ``prefect_test_harness`` (a temporary Prefect API and database).
- ``ray_local``: ``ray.init(num_cpus=2)`` on this machine, after the S3 environment is set (Ray's
  workers inherit the environment of the process that starts Ray); shut down at the end.
"""

from __future__ import annotations

import os
import uuid
from unittest.mock import patch  # of os.environ only: the services themselves are real

# On a shared 2-core machine torch's intra-op threads fight each other and Ray's workers; one
# thread per process is several times faster here. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from infra.s3_server import S3Server  # noqa: E402

TEST_BUCKET = "ssh-tests"


@pytest.fixture(scope="session")
def s3_server():
    """A running SeaweedFS S3 endpoint; the session's environment points at it."""
    server = S3Server().start()
    try:
        with patch.dict(os.environ, server.env):
            yield server
    finally:
        server.stop(grace_s=3.0)  # its data folder is thrown away: no need to wait for a graceful stop


@pytest.fixture(scope="session")
def s3_bucket(s3_server) -> str:
    return s3_server.create_bucket(TEST_BUCKET)


@pytest.fixture(scope="session")
def flow_s3_bucket(s3_server) -> str:
    """A bucket for the flow tests (the same server)."""
    return s3_server.create_bucket("ssh-flow-tests")


@pytest.fixture
def s3_prefix(s3_bucket) -> str:
    """A fresh ``s3://`` prefix for one test."""
    return f"s3://{s3_bucket}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: flows and tasks run against a temporary API and database."""
    from prefect.testing.utilities import prefect_test_harness

    saved = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry writes racing the test database
    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
        else:
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = saved


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A local Ray runtime on 2 CPUs whose workers see the S3 environment; shut down at the end."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, address="local")
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
