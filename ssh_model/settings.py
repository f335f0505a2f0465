"""The one settings object, read from environment variables prefixed ``SSH_``.

Every layer (library, tasks, flows, tests, benchmarks) reads its defaults from here;
there is no second config system. Storage locations are fsspec URLs.

    SSH_DATA_ROOT          where data, triplets, models and the MLflow store live
    SSH_MAX_IMAGE_PIXELS   decompression-bomb limit for any image we open
    SSH_MIN_IMAGE_SIDE     photos with a shorter side are rejected at ingest
    SSH_CROP_SIZE          triplet crop size in pixels
    SSH_LUT_SIZE           grid size of generated 3D LUTs
    SSH_SEED               the default seed for everything random
    SSH_MODEL_URI          the model inference loads by default (unset: the registry's champion when a
                           registry has one, else the weights shipped in the package)
    SSH_S3_ENDPOINT_URL    an S3-compatible endpoint (falls back to AWS_ENDPOINT_URL)

Credentials never live here: s3fs reads them from the standard AWS environment and files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_root: str = field(default_factory=lambda: str(Path.cwd() / "data"))
    max_image_pixels: int = 80_000_000
    min_image_side: int = 128
    crop_size: int = 256
    lut_size: int = 33
    seed: int = 0
    model_uri: str = ""
    s3_endpoint_url: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``SSH_*`` variables; unknown or malformed values raise."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            name = f"SSH_{spec.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind = int if spec.type == "int" else str
            try:
                values[spec.name] = kind(raw)
            except ValueError as err:
                raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from err
        if "s3_endpoint_url" not in values and env.get("AWS_ENDPOINT_URL"):
            values["s3_endpoint_url"] = env["AWS_ENDPOINT_URL"]
        return cls(**values)

    @classmethod
    def env_names(cls) -> tuple[str, ...]:
        """The ``SSH_*`` variables these settings read (and nothing else that starts with ``SSH_``, such as
        OpenSSH's ``SSH_AUTH_SOCK``)."""
        return tuple(f"SSH_{spec.name.upper()}" for spec in fields(cls))

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)

    def path(self, *parts: str) -> str:
        """A URL under the data root (works for local paths and ``s3://`` alike)."""
        return "/".join([self.data_root.rstrip("/"), *parts])


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; read at call time so tests can patch env)."""
    return Settings.from_env()
