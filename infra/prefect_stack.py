"""A real local Prefect stack on loopback: ``prefect server start`` + a process work pool + a worker.

    python -m infra.prefect_stack [--home DIR] [--port N] [--pool local-process] [--no-worker]

prints the API URL to export (``PREFECT_API_URL``) and runs until interrupted. Tests use the
``PrefectStack`` class the same way (a context manager). The server gets its own ``PREFECT_HOME``
and SQLite database, migrated before the server starts (the first migration takes a while on small
machines). Processes run in their own process groups and are stopped by id, children included.

Detached use (``infra.local_stack``): ``start`` leaves the server and worker running in their own
sessions; their pids are ``stack.server.pid`` / ``stack.worker.pid``. A later command reaches the
same server with ``PrefectStack(home, port=...)`` (``cli``, ``healthy``, ``wait_for_flow_run``, ...)
without starting anything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra.processes import tail

DEFAULT_POOL = "local-process"
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def prefect_executable() -> list[str]:
    """The ``prefect`` CLI of this interpreter's environment."""
    return [sys.executable, "-m", "prefect"]


def _request(url: str, payload: dict | None = None, timeout: float = 10.0) -> tuple[int, object]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        url, data=data, method="POST" if data is not None else "GET", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


class PrefectStack:
    """Start, use and stop a local Prefect server, work pool and process worker.

    Args:
        home: the stack's PREFECT_HOME (SQLite database, profiles, logs).
        port: API port (default: a free one).
        pool: name of the process work pool.
        env: extra environment for every process (e.g. the S3 endpoint); the worker passes it on to flow runs.
        services: run the server's background services (scheduler, late runs, ...); tests may turn them off.
        ui: serve the web UI at the API's host and port (off by default: tests do not need it).
    """

    def __init__(
        self,
        home: str | Path,
        port: int | None = None,
        pool: str = DEFAULT_POOL,
        env: dict[str, str] | None = None,
        services: bool = True,
        ui: bool = False,
    ) -> None:
        self.home = Path(home).absolute()
        self.port = port or free_port()
        self.pool = pool
        self.extra_env = dict(env or {})
        self.services = services
        self.ui = ui
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def env(self) -> dict[str, str]:
        """The environment for Prefect CLI commands against this stack."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_SERVER_API_HOST": HOST,
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "true" if self.ui else "false",
                "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            }
        )
        if not self.services:
            for service in (
                "SCHEDULER",
                "LATE_RUNS",
                "FOREMAN",
                "PAUSE_EXPIRATIONS",
                "CANCELLATION_CLEANUP",
                "REPOSSESSOR",
                "TRIGGERS",
                "CLEANUP_RECONCILER",
            ):
                env[f"PREFECT_SERVER_SERVICES_{service}_ENABLED"] = "false"
        env.update(self.extra_env)
        return env

    def cli(
        self, *args: str, timeout: float = 300, cwd: str | Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run ``prefect <args>`` against this stack; raises with the output when it fails and ``check``."""
        result = subprocess.run(
            [*prefect_executable(), "--no-prompt", *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def migrate(self, timeout: float = 900) -> None:
        """Create or upgrade the SQLite database before the server starts."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("server", "database", "upgrade", "-y", timeout=timeout)

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen:
        log = open(self.home / log_name, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            return subprocess.Popen(
                [*prefect_executable(), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def start_server(self, timeout: float = 300) -> None:
        self.server = self._spawn(["server", "start", "--host", HOST, "--port", str(self.port)], "server.log", self.env)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.server.returncode}:\n{tail(self.home / 'server.log')}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"prefect server at {self.api_url} not healthy after {timeout:.0f}s:\n{tail(self.home / 'server.log')}"
        )

    def healthy(self) -> bool:
        """True when the API answers ``GET /health`` with true."""
        try:
            status, body = _request(f"{self.api_url}/health", timeout=2)
        except (OSError, ValueError):
            return False
        return status == 200 and body is True

    def workers_online(self) -> int:
        """How many workers of the pool the server counts as online (heartbeat seen recently)."""
        try:
            status, body = _request(f"{self.api_url}/work_pools/{self.pool}/workers/filter", {}, timeout=5)
        except (OSError, ValueError):
            return 0
        if status != 200 or not isinstance(body, list):
            return 0
        return sum(1 for worker in body if worker.get("status") == "ONLINE")

    def wait_worker_online(self, timeout: float = 120) -> None:
        """Wait until a worker of the pool is online; raises with the worker log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while not self.workers_online():
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError(f"prefect worker exited with {self.worker.returncode}:\n{tail(self.home / 'worker.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no worker of pool {self.pool!r} online after {timeout:.0f}s:\n{tail(self.home / 'worker.log')}"
                )
            time.sleep(0.5)

    def create_work_pool(self) -> None:
        """Create the process work pool (fine when it exists already)."""
        status, body = _request(f"{self.api_url}/work_pools/", {"name": self.pool, "type": "process"})
        if status not in (200, 201, 409):
            raise RuntimeError(f"could not create work pool {self.pool!r}: HTTP {status} {body}")

    def start_worker(self, env: dict[str, str] | None = None) -> None:
        """Start a process worker on the pool; ``env`` is added to its (and its flow runs') environment."""
        self.worker = self._spawn(
            ["worker", "start", "--pool", self.pool, "--type", "process"], "worker.log", {**self.env, **(env or {})}
        )
        time.sleep(1.0)
        if self.worker.poll() is not None:
            raise RuntimeError(f"prefect worker exited with {self.worker.returncode}:\n{tail(self.home / 'worker.log')}")

    def start(self, worker: bool = True) -> PrefectStack:
        self.migrate()
        self.start_server()
        self.create_work_pool()
        if worker:
            self.start_worker()
        return self

    @staticmethod
    def _stop(process: subprocess.Popen | None, timeout: float = 20) -> None:
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)  # our child's own group: it and its flow-run children
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        self._stop(self.worker)
        self._stop(self.server)
        self.worker = self.server = None

    def logs(self, name: str = "worker.log", chars: int = 8000) -> str:
        return tail(self.home / name, chars)

    def flow_run(self, flow_run_id: str) -> dict:
        status, body = _request(f"{self.api_url}/flow_runs/{flow_run_id}")
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"cannot read flow run {flow_run_id}: HTTP {status} {body}")
        return body

    def wait_for_flow_run(self, flow_run_id: str, timeout: float = 600, poll_s: float = 2.0) -> dict:
        """Poll until the run reaches a final state; returns the flow run (``state_type`` says which)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(flow_run_id)
            if run.get("state_type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} is still {run.get('state_type')} after {timeout:.0f}s")
            time.sleep(poll_s)

    def flow_run_logs(self, flow_run_id: str, page: int = 200) -> list[str]:
        """All the run's log messages (flow and task loggers), oldest first (read page by page)."""
        messages: list[str] = []
        while True:
            status, body = _request(
                f"{self.api_url}/logs/filter",
                {
                    "logs": {"flow_run_id": {"any_": [flow_run_id]}},
                    "sort": "TIMESTAMP_ASC",
                    "limit": page,
                    "offset": len(messages),
                },
            )
            if status != 200 or not isinstance(body, list):
                raise RuntimeError(f"cannot read logs of flow run {flow_run_id}: HTTP {status} {body}")
            messages += [entry["message"] for entry in body]
            if len(body) < page:
                return messages

    def __enter__(self) -> PrefectStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.prefect_stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=None, help="PREFECT_HOME of the stack (default: <data root>/prefect)")
    parser.add_argument("--port", type=int, default=None, help="API port (default: a free one)")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="process work pool name")
    parser.add_argument("--no-worker", action="store_true", help="start no worker")
    args = parser.parse_args(argv)
    if args.home is None:
        from ssh_model.settings import get_settings

        args.home = get_settings().path("prefect")
    stack = PrefectStack(args.home, port=args.port, pool=args.pool)
    print(f"migrating the database in {stack.home} ...", flush=True)
    stack.start(worker=not args.no_worker)
    print(
        f"Prefect API: {stack.api_url}\nwork pool: {stack.pool}\n\n"
        f"    export PREFECT_API_URL={stack.api_url}\n    prefect deploy --all\n\n"
        f"logs in {stack.home}; Ctrl-C stops everything.",
        flush=True,
    )
    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stopping:
            time.sleep(1.0)
            for name, process in (("server", stack.server), ("worker", stack.worker)):
                if process is not None and process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", flush=True)
                    stopping = True
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
