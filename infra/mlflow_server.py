"""An MLflow tracking server on loopback: SQLite store, artifacts proxied to S3 (``mlflow server``).

The server is the one place that talks to the artifact store: clients log and download through it
(``--serve-artifacts``; new experiments get ``mlflow-artifacts:/`` locations), so they need its URL
(``MLFLOW_TRACKING_URI``) and nothing else. Its own environment carries the S3 endpoint
(``MLFLOW_S3_ENDPOINT_URL``) and keys. One web worker, and MLflow's background job runner off: the
stack runs on small machines and uses neither.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from infra.processes import tail, wait_for
from infra.s3_server import HOST, free_ports


class MlflowServer:
    """Start and check an ``mlflow server`` process (``start`` returns it; it outlives this object).

    Args:
        home: folder of the SQLite store (``mlflow.db``) and the log (``mlflow.log``).
        artifacts_destination: where the server keeps artifacts, e.g. ``s3://bucket/mlflow``.
        env: the server's environment (S3 endpoint and keys included).
        port: the port (default: a free one).
    """

    def __init__(self, home: str | Path, artifacts_destination: str, env: dict[str, str], port: int | None = None) -> None:
        self.home = Path(home).absolute()
        self.artifacts_destination = artifacts_destination
        self.env = env
        self.port = port or free_ports(1)[0]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "mlflow.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.home / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            self.artifacts_destination,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def spawn(self) -> subprocess.Popen:
        """Start the server in its own process group, without waiting for it (see ``wait_healthy``)."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self.process

    def healthy(self) -> bool:
        return check_health(self.url)

    def wait_healthy(self, timeout: float = 180.0) -> None:
        """Wait until ``/health`` answers OK; raises with the log's tail when the server exits or times out."""

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{tail(self.log_path)}")
            return self.healthy()

        if not wait_for(ready, timeout, poll_s=0.5):
            raise TimeoutError(f"mlflow server at {self.url} not healthy after {timeout:.0f}s:\n{tail(self.log_path)}")


def check_health(url: str, timeout: float = 3.0) -> bool:
    """True when the MLflow server at ``url`` answers ``GET /health`` with OK."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200 and response.read().strip() == b"OK"
    except (OSError, urllib.error.URLError, ValueError):
        return False
