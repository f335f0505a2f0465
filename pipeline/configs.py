"""One typed, frozen config per stage: the only home of each stage's defaults.

    IngestConfig      ingest-images: which photos, how many read at once
    TripletConfig     build-triplets: grades, triplets per photo, crops, layouts, shard layout
    EvalConfig        the evaluation sets every comparison uses (train-model's report, the gate, compare-models)
    TrainModelConfig  train-model: network, optimisation, workers, checkpoints, registry and gate
    CompareConfig     compare-models: which models and baselines
    BatchConfig       harmonize-batch: model, actors, outputs, failure budget

Flows take these as parameters (Prefect renders them as forms and validates them), ``ssh-harmonize``
generates its options and ``--help`` from the field descriptions, and train-model saves its config in
MLflow and in every checkpoint. Where *what to work on* is given (a data root, a version, a catalog), it
is a flow parameter of its own; these configs say *how*. ``None`` means "decided at run time" and the
description says from what (the ``SSH_*`` settings, the hardware). Values are checked where they are
used (``pipeline.triplet_plan.check_build_arguments``, ``pipeline.batch_inference``), once.

Named presets are thin constructors below (``demo_triplets``, ``demo_training``).

This module imports pydantic and a few of the library's constants (no torch, Ray, MLflow or Prefect), so the
CLI's ``--help`` and the flows' parameter schemas stay cheap.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ssh_model.samples import BUILTIN_SAMPLES_URL
from ssh_model.settings import Settings
from ssh_model.shards import DEFAULT_ENCODING, ROWS_PER_GROUP

MODEL_NAME = "ssh-harmonizer"
EXPERIMENT = "ssh-harmonization"
VERSION = "v1"  # the triplet version build-triplets writes and train-model reads when none is named


class StageConfig(BaseModel):
    """Frozen, and unknown fields are an error (a typo in a deployment's parameters fails loudly)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestConfig(StageConfig):
    sources: list[str] = Field(
        default_factory=lambda: [BUILTIN_SAMPLES_URL],
        description="photo URLs, folders (searched recursively) or globs, any fsspec scheme; "
        f"{BUILTIN_SAMPLES_URL} names the photos bundled with scikit-image and scikit-learn",
        min_length=1,
    )
    max_workers: int = Field(8, ge=1, description="photos read at once")


class TripletConfig(StageConfig):
    luts: str | None = Field(
        None,
        description="generator:SEED[:COUNT[:full|mixed|mild]] (the seeded grade generator, COUNT grades, default "
        "100, at those strengths) or the URL of a folder of .cube files; default generator:<seed>",
    )
    per_image: int = Field(8, description="triplets per photo")
    crop_size: int | None = Field(None, description="crop side in pixels (default: SSH_CROP_SIZE)")
    seed: int | None = Field(None, description="seed of every triplet's crops, flips and grades (default: SSH_SEED)")
    region_fraction: float = Field(
        0.0, description="share of triplets laid out as a foreground region and the scene around it, as harmonize sees it"
    )
    masks: str | None = Field(
        None, description="folder URL of object masks (*.png) whose outlines shape the region triplets (default: blobs)"
    )
    natural_fraction: float = Field(
        0.0, description="share of triplets whose reference keeps the photo's own colours, as a composite's background does"
    )
    overwrite: bool = Field(False, description="rebuild a complete version (otherwise it is left as it is)")
    encoding: str = Field(DEFAULT_ENCODING, description="image encoding in the shards: webp, png or raw (lossless)")
    rows_per_group: int = Field(ROWS_PER_GROUP, description="rows per Parquet row group (the reader's unit of work)")
    triplets_per_shard: int = Field(512, description="about this many triplets per file (whole photos per file)")
    num_cpus: int | None = Field(None, description="cap on the CPUs used, and of a local Ray started here (default: all)")

    def crop_and_seed(self, settings: Settings) -> tuple[int, int]:
        """The crop side and the seed, from the settings where this config leaves them unset."""
        return self.crop_size or settings.crop_size, settings.seed if self.seed is None else self.seed


class EvalConfig(StageConfig):
    experiment: str = Field(EXPERIMENT, description="the MLflow experiment")
    model_name: str = Field(MODEL_NAME, description="the registered model")
    eval_max_side: int | None = Field(
        None, description="downscale the fixed evaluation set's photos to this long side (default: full size)"
    )
    eval_photos: int | None = Field(None, description="use only the first N photos of the fixed set (default: all)")
    val_limit: int = Field(256, description="validation triplets evaluated")
    grid_rows: int = Field(6, description="composites shown in the side-by-side image grid logged to MLflow")


class TrainModelConfig(EvalConfig):
    preset: str = Field(
        "auto", description="full, small, tiny or auto (full on GPUs, small on CPUs); the colour family has grid-small"
    )
    model_family: str = Field("ssh", description="ssh (SSHNet, predicts pixels) or colour (ColourNet, a colour transform)")
    steps: int | None = Field(None, description="optimizer steps (default: 20000 on GPUs, 2000 on CPUs)")
    batch_size: int | None = Field(None, description="triplets per worker per step (default: 32 on GPUs, 8 on CPUs)")
    lr: float = Field(2e-4, description="peak AdamW learning rate, after a linear warm-up, then cosine decay")
    warmup_steps: int | None = Field(None, description="warm-up steps (default: 5% of the steps)")
    num_workers: int | None = Field(None, description="training workers (default: every GPU, else 2)")
    use_gpu: bool | None = Field(None, description="train on GPUs (default: when the Ray cluster has some)")
    loader_workers: int | None = Field(None, description="DataLoader processes per worker (default: 8 on GPUs, 0 on CPUs)")
    threads: int = Field(1, description="torch CPU threads per worker; a worker reserves threads + loader_workers CPUs")
    checkpoint_every: int = Field(200, description="steps between checkpoints (the last step is always one)")
    log_every: int = Field(20, description="steps between progress lines and logged losses")
    sample_every: int = Field(200, description="steps between sample grids in MLflow (0: never)")
    max_failures: int = Field(2, description="worker failures recovered from, each from the last checkpoint")
    seed: int | None = Field(None, description="the training seed (default: SSH_SEED)")
    select_photos: int = Field(
        64, description="val-split photos whose composites pick the returned model among the checkpoints (0: the last)"
    )
    register_model: bool = Field(True, description="register the model as a candidate and run the promotion gate")
    gate_metric: str = Field("psnr", description="the gate's metric on the fixed evaluation set")
    gate_margin: float = Field(0.1, description="by how much a candidate must beat the champion to be promoted")
    resource_wait_s: float | None = Field(120.0, description="seconds to wait for free CPUs/GPUs before refusing to start")

    def resolve(self, gpus: int, settings: Settings) -> TrainModelConfig:
        """This config with every field left to run time decided: on GPUs (when ``use_gpu`` is unset: when the
        cluster has ``gpus``) the full network, 20000 steps of 32 per GPU, 8 loader processes each; on CPUs the
        small one, 2000 steps of 8, 2 workers; the seed from the settings."""
        use_gpu = gpus > 0 if self.use_gpu is None else self.use_gpu
        by_hardware = ("full", 20_000, 32, 8, max(1, gpus)) if use_gpu else ("small", 2_000, 8, 0, 2)
        preset, steps, batch, loaders, workers = by_hardware
        steps = self.steps or steps
        return self.model_copy(
            update={
                "use_gpu": use_gpu,
                "preset": preset if self.preset == "auto" else self.preset,
                "steps": steps,
                "batch_size": self.batch_size or batch,
                "warmup_steps": self.warmup_steps if self.warmup_steps is not None else max(1, steps // 20),
                "num_workers": self.num_workers or workers,
                "loader_workers": loaders if self.loader_workers is None else self.loader_workers,
                "seed": settings.seed if self.seed is None else self.seed,
            }
        )


class CompareConfig(EvalConfig):
    models: list[str] = Field(
        default_factory=lambda: ["champion", "candidate"],
        description="model references: aliases (champion), versions (3), models:/ URIs or .safetensors URLs",
    )
    baselines: list[str] | None = Field(
        None,
        description="classical baselines scored too, [] for none (on the command line: --baselines '') "
        "(default: every one in ssh_model.baselines)",
    )


class BatchConfig(StageConfig):
    model_uri: str = Field(
        "",
        description="models:/name@alias, models:/name/N, a .safetensors URL or 'pretrained' (default: SSH_MODEL_URI, "
        "else the registry's champion when there is one, else the weights shipped with the package)",
    )
    overwrite: bool = Field(False, description="redo rows whose outputs are up to date")
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0, description="the job fails when more than this share of rows fail")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality of JPEG and WebP outputs")
    concurrency: int | None = Field(
        None, ge=1, description="model actors (default: one per GPU, else per CPU up to 8, no more than fit in memory)"
    )
    num_gpus: float | None = Field(None, ge=0, description="GPUs per actor (default: 1 when the Ray cluster has GPUs)")
    num_cpus: float | None = Field(None, gt=0, description="CPUs per actor (default: 1, less with more actors than CPUs)")
    batch_size: int = Field(1, ge=1, description="rows per actor call (images of different sizes go one by one)")
    fetch_threads: int = Field(8, ge=1, description="parallel downloads per fetch task")
    fetch_timeout_s: float | None = Field(
        300.0, description="a row whose inputs are not downloaded in this many seconds fails alone (reason timeout)"
    )
    max_pixels: int | None = Field(
        None, description="the decompression-bomb limit, and what actors are sized for (default: SSH_MAX_IMAGE_PIXELS)"
    )
    memory_share: float = Field(0.8, gt=0, le=1, description="share of Ray's schedulable memory the actors may reserve")
    report_thumbnails: int = Field(24, description="the first rows of the catalog shown with thumbnails in the report")
    progress_every_s: float = Field(10.0, description="seconds between progress lines")
    fragment_rows: int = Field(256, description="write a fragment of results when this many rows are pending ...")
    fragment_seconds: float = Field(2.0, description="... or when the oldest pending row has waited this long")
    keep_records: int = Field(50_000, description="catalogs up to this size keep every record in memory for the caller")


# -- named presets ----------------------------------------------------------------------------------


def demo_triplets(seed: int) -> TripletConfig:
    """The demo's data: 64 small crops per photo under mostly gentle grades (the recipe measured best in a few
    CPU minutes, benchmarks/bench_recipe.py)."""
    return TripletConfig(luts=f"generator:{seed}:100:mild", per_image=64, crop_size=64)


def demo_training() -> TrainModelConfig:
    """The demo's training: ColourNet's 4 x 4 grid of transforms, a low learning rate, 2 CPU workers, the model
    picked among frequent checkpoints, the gate on a downscaled evaluation set."""
    return TrainModelConfig(
        model_family="colour",
        preset="grid-small",
        steps=600,
        batch_size=8,
        lr=1e-4,
        num_workers=2,
        checkpoint_every=50,
        eval_max_side=256,
    )
