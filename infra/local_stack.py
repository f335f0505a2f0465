"""The whole local stack on loopback, detached: S3 (SeaweedFS), an MLflow server, a Prefect server and worker.

    python -m infra.local_stack start  [--state DIR]     # infra/local/start.sh [DIR]
    python -m infra.local_stack status [--state DIR]
    python -m infra.local_stack env    [--state DIR]
    python -m infra.local_stack stop   [--state DIR]     # infra/local/stop.sh [DIR]

``start`` returns once every component passes its health check and leaves them running in their
own process groups. The state folder (default: ``.stack/`` in the repo root) holds their data and
logs, ``state.json`` (ports and pids, nothing secret) and ``env.sh``, readable by its owner only:
the exports a shell needs (``PREFECT_API_URL``, ``MLFLOW_TRACKING_URI``, the S3 endpoint, region and
keys). Commands print the non-secret exports only. ``start`` on a running stack says so; on a partly
running one it stops what is left and starts again (data is kept). ``stop`` stops every process the
stack started, children included, keeps the data and removes ``env.sh`` (its keys die with the S3
server). ``status`` exits 0 when every component is healthy, 1 when one is not, 3 when nothing runs.

Components: SeaweedFS with buckets ``ssh-data`` (for your data) and ``ssh-mlflow``; ``mlflow server``
on SQLite with artifacts proxied to ``s3://ssh-mlflow/mlflow``; the Prefect server (UI on) with the
process pool ``local-process`` and one worker, whose flow runs see the exports above.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from infra.mlflow_server import MlflowServer, check_health
from infra.prefect_stack import DEFAULT_POOL, PrefectStack
from infra.processes import ProcessRecord, is_running, record, stop, tail
from infra.s3_server import REGION, S3Server, read_env_file, write_env_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STATE = REPO / ".stack"
DATA_BUCKET = "ssh-data"
MLFLOW_BUCKET = "ssh-mlflow"
ARTIFACTS_DESTINATION = f"s3://{MLFLOW_BUCKET}/mlflow"
COMPONENTS = ("s3", "mlflow", "prefect-server", "prefect-worker")
LOGS = {
    "s3": "s3/weed.log",
    "mlflow": "mlflow/mlflow.log",
    "prefect-server": "prefect/server.log",
    "prefect-worker": "prefect/worker.log",
}
SECRET_NAMES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
# SeaweedFS closes its volumes at once on SIGTERM, then drains gRPC for ~15 s: no need to wait for that.
STOP_GRACE_S = {"s3": 5.0}


def s3_buckets(env: dict[str, str]) -> set[str]:
    """The buckets the S3 endpoint of ``env`` lists with ``env``'s keys (an authenticated request)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env.get("AWS_DEFAULT_REGION", REGION),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}),
    )
    return {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}


class LocalStack:
    """The stack whose state lives in ``state_dir`` (started or not)."""

    def __init__(self, state_dir: str | Path = DEFAULT_STATE) -> None:
        self.dir = Path(state_dir).absolute()

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def env_file(self) -> Path:
        return self.dir / "env.sh"

    def load(self) -> dict | None:
        """The recorded state, or None when no stack was started here (or it was stopped)."""
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def _save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    def processes(self, state: dict | None = None) -> list[ProcessRecord]:
        state = state if state is not None else self.load()
        return [ProcessRecord(**entry) for entry in (state or {}).get("processes", [])]

    def env(self) -> dict[str, str]:
        """The exports of ``env.sh`` (keys included: do not print them)."""
        return read_env_file(self.env_file)

    def prefect(self, state: dict | None = None) -> PrefectStack:
        """A handle on the running Prefect server (``cli``, ``wait_for_flow_run``, logs); starts nothing."""
        state = state if state is not None else self.load()
        if state is None:
            raise RuntimeError(f"no stack runs in {self.dir}")
        return PrefectStack(self.dir / "prefect", port=state.get("prefect_port"), pool=state.get("pool", DEFAULT_POOL))

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One start or stop at a time per state folder."""
        if not self.dir.exists():
            self.dir.mkdir(mode=0o700, parents=True)
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> dict[str, tuple[bool, str]] | None:
        """Each component's (healthy, what was found); None when no stack was started here."""
        state = self.load()
        if state is None:
            return None
        env, prefect = self.env(), self.prefect(state)
        checks = {
            "s3": lambda: {DATA_BUCKET, MLFLOW_BUCKET} <= s3_buckets(env),
            "mlflow": lambda: check_health(state["urls"].get("mlflow", "")),
            "prefect-server": prefect.healthy,
            "prefect-worker": lambda: prefect.workers_online() > 0,
        }
        records = {process.name: process for process in self.processes(state)}
        report = {}
        for name in COMPONENTS:
            process = records.get(name)
            if process is None or not is_running(process.pid, process.started):
                report[name] = (False, "not running")
                continue
            try:
                healthy = bool(checks[name]())
            except Exception as err:  # any failure of a check means unhealthy; say which
                healthy, why = False, f"{type(err).__name__}: {err}"
            else:
                why = "healthy" if healthy else "running, but its health check fails"
            report[name] = (healthy, f"pid {process.pid}, {why}")
        return report

    # -- start and stop ----------------------------------------------------------------------------

    def start(self, timeout: float = 300.0, services: bool = True) -> bool:
        """Start every component (True), or nothing when all are running and healthy already (False)."""
        with self._lock():
            state = self.load()
            if state is not None:
                report = self.health() or {}
                if all(healthy for healthy, _ in report.values()):
                    return False
                self._stop_processes(state)  # partly running: start afresh on the same data
            state = {
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "pool": DEFAULT_POOL,
                "buckets": {"data": DATA_BUCKET, "mlflow": MLFLOW_BUCKET},
                "urls": {},
                "processes": [],
            }
            try:
                self._start(state, timeout, services)
            except BaseException:
                self._stop_processes(state)
                self.state_file.unlink(missing_ok=True)
                self.env_file.unlink(missing_ok=True)
                raise
            return True

    def _record(self, state: dict, name: str, pid: int) -> None:
        state["processes"].append(asdict(record(name, pid)))
        self._save(state)

    def _start(self, state: dict, timeout: float, services: bool) -> None:
        s3 = S3Server(self.dir / "s3").start(timeout=min(timeout, 120.0))
        self._record(state, "s3", s3.process.pid)
        state["urls"]["s3"] = s3.endpoint_url
        for bucket in (DATA_BUCKET, MLFLOW_BUCKET):
            s3.create_bucket(bucket)
        storage_env = {**s3.env, "AWS_REGION": REGION, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url}

        # MLflow starts (and migrates its database) while Prefect migrates its own.
        mlflow = MlflowServer(self.dir / "mlflow", ARTIFACTS_DESTINATION, {**os.environ, **storage_env})
        self._record(state, "mlflow", mlflow.spawn().pid)
        state["urls"]["mlflow"] = mlflow.url

        prefect = PrefectStack(self.dir / "prefect", services=services, ui=True)
        state["prefect_port"] = prefect.port
        state["urls"]["prefect_api"] = prefect.api_url
        prefect.migrate(timeout=max(timeout, 300.0))
        try:
            prefect.start_server(timeout)
        finally:
            if prefect.server is not None:
                self._record(state, "prefect-server", prefect.server.pid)
        mlflow.wait_healthy(timeout)

        # The worker's flow runs inherit its environment: the stack's services and keys.
        service_env = {**storage_env, "MLFLOW_TRACKING_URI": mlflow.url}
        prefect.create_work_pool()
        try:
            prefect.start_worker(env=service_env)
        finally:
            if prefect.worker is not None:
                self._record(state, "prefect-worker", prefect.worker.pid)
        prefect.wait_worker_online(timeout)

        write_env_file(
            {
                "PREFECT_API_URL": prefect.api_url,
                "MLFLOW_TRACKING_URI": mlflow.url,
                "AWS_ENDPOINT_URL": s3.endpoint_url,
                "SSH_S3_ENDPOINT_URL": s3.endpoint_url,
                "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            },
            self.env_file,
        )
        failing = {name: detail for name, (healthy, detail) in (self.health() or {}).items() if not healthy}
        if failing:
            raise RuntimeError(
                "\n".join(f"{name}: {detail}\n{tail(self.dir / LOGS[name])}" for name, detail in failing.items())
            )

    def _stop_processes(self, state: dict) -> list[str]:
        """Stop the recorded processes, last started first; the names of those that were running."""
        return [
            process.name
            for process in reversed(self.processes(state))
            if stop(process, grace_s=STOP_GRACE_S.get(process.name, 20.0))
        ]

    def stop(self) -> list[str] | None:
        """Stop everything (the names of what was running); None when no stack was started here."""
        with self._lock():
            state = self.load()
            if state is None:
                return None
            stopped = self._stop_processes(state)
            self.env_file.unlink(missing_ok=True)
            self.state_file.unlink(missing_ok=True)
            return stopped

    # -- what to tell people -----------------------------------------------------------------------

    def summary(self) -> str:
        """Where everything is and the non-secret exports; the keys stay in ``env.sh``."""
        state = self.load() or {"urls": {}}
        urls = state["urls"]
        prefect_ui = urls.get("prefect_api", "").removesuffix("/api")
        lines = [
            f"S3 (SeaweedFS)  {urls.get('s3')}  buckets: s3://{DATA_BUCKET} (data), {ARTIFACTS_DESTINATION} "
            "(MLflow artifacts)",
            f"MLflow          {urls.get('mlflow')}",
            f"Prefect         {prefect_ui}  (API {urls.get('prefect_api')}, work pool {state.get('pool')} "
            "with one process worker)",
            f"logs            {self.dir}/{{{','.join(LOGS.values())}}}",
            "",
            *[f"export {name}={shlex.quote(value)}" for name, value in self.env().items() if name not in SECRET_NAMES],
            "# and the S3 keys: in the file only. In each shell that uses the stack:",
            f"source {shlex.quote(str(self.env_file))}",
        ]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local_stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--state", default=str(DEFAULT_STATE), help="state folder (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each component may take to start")
    parser.add_argument(
        "--no-prefect-services",
        action="store_true",
        help="start the Prefect server without its background services (no schedules)",
    )
    args = parser.parse_args(argv)
    stack = LocalStack(args.state)

    if args.command == "start":
        print(f"starting the local stack in {stack.dir} (a first start migrates the databases) ...", flush=True)
        try:
            started = stack.start(timeout=args.timeout, services=not args.no_prefect_services)
        except Exception as err:  # reported with the failing component's log tail
            print(f"the local stack did not start; everything it started is stopped again.\n{err}", file=sys.stderr)
            return 1
        print("started:" if started else f"already running in {stack.dir}:")
        print(stack.summary(), flush=True)
        return 0

    if args.command == "stop":
        stopped = stack.stop()
        if stopped is None:
            print(f"no local stack in {stack.dir}: nothing to stop")
        else:
            print(f"stopped {', '.join(stopped) or 'nothing (no process was left running)'}; data kept in {stack.dir}")
        return 0

    if stack.load() is None:
        print(f"no local stack runs in {stack.dir} (start it with infra/local/start.sh {stack.dir})")
        return 3
    if args.command == "env":
        print(stack.summary())
        return 0
    report = stack.health() or {}
    for name, (healthy, detail) in report.items():
        print(f"{name:<15} {'ok  ' if healthy else 'FAIL'}  {detail}")
    return 0 if all(healthy for healthy, _ in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
