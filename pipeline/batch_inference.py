"""Bulk harmonization with Ray Data: fetch inputs in parallel, harmonize on an actor pool, write atomically.

The pipeline over the catalog rows (one Ray Data dataset, streamed):

    rows --map_batches(fetch_inputs)-->  bytes + content hashes; up-to-date rows marked skipped
         --map_batches(Harmonizer)--->   decode, check, harmonize at full resolution, encode, write
         --> driver: records -> fragments (atomic, incremental), progress in the logs

Records are durable a few seconds after their outputs: each stage emits one-row blocks, so a record
reaches the driver as soon as its row is done (not when its whole block is), and the driver's
``FragmentWriter`` writes what it holds at least every ``fragment_seconds`` (2 s by default), by a
timer when no further record arrives. A driver killed with ``kill -9`` therefore loses the records
of its last ~2-3 s of outputs, which the next run makes again; a record holds its output's sha256 and
size, and a rerun makes again any output that is missing or differs (``pipeline.results``).

``fetch_inputs`` runs as light Ray tasks (I/O bound, a thread pool per batch, no CPU reserved) so
downloads overlap the actors' compute. ``Harmonizer`` builds the model once per actor, on a GPU when
the actor has one, from weights the driver resolved once and put in Ray's object store: an alias
like ``@champion`` is pinned for the whole run, and actors never call the registry. Every row is
handled on its own: a bad URL, an unreachable or forbidden object, a corrupt image, a mask of another
size, an empty mask, an image over the pixel limit or an output outside the prefix gives that row
status ``error`` with a reason, and the job goes on; good rows are always done and recorded.

Error reasons in the results table are the codes of ``ssh_model.errors.REASONS``:

    unsupported_url  unknown URL scheme (foo://), or its filesystem backend not installed (gs:// without gcsfs)
    unreachable      connection refused or reset, endpoint unreachable, unknown host
    forbidden        HTTP 401/403, AccessDenied, a local permission error, no credentials
    missing          no such file or object (HTTP 404, NoSuchKey)
    timeout          a connect or read timeout, or the row's inputs not fetched within ``fetch_timeout_s``
    io               other storage errors (HTTP 5xx and throttling after the client's own retries)
    empty, unreadable, truncated, too_small, too_large, not_rgb   the image cannot be used (``ImageError``)
    bad_array, no_mask, mask_size, empty_mask, full_mask, empty_reference   the composite and its masks
                     cannot be used together (``ssh_model.inputs``; e.g. no mask and no alpha, sizes
                     that differ, a mask that selects nothing or everything)
    target_size      ground truth and composite differ in size
    unsafe_output    the output is outside the output prefix, contains '..', has no image extension, or is
                     in the reserved ``_results/`` folder (see ``pipeline.catalog``): nothing is read or written
    invalid          other input the library refuses
    internal         a bug: logged with its traceback
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import ray

from pipeline.batch_actor import Harmonizer, ModelPayload, load_model_payload
from pipeline.batch_stages import PLAN_SCHEMA, PREVIOUS_KEYS, THUMBS, fetch_inputs
from pipeline.catalog import Catalog
from pipeline.configs import BatchConfig
from pipeline.job_report import RunSummary, SummaryBuilder
from pipeline.ray_runtime import ray_init
from pipeline.results import RECORD_SCHEMA, FragmentWriter, load_previous, merge_results, new_run_id
from ssh_model.progress import progress_line
from ssh_model.settings import get_settings

logger = logging.getLogger(__name__)

MAX_AUTO_CPU_ACTORS = 8
# Memory of an actor: its process, torch, the model and fixed working buffers, plus per pixel of the
# image it decodes, harmonizes and encodes. benchmarks/bench_memory.py measured 22 B/px above a
# 0.27 GiB process at 79 MP (0.38 GiB extra at 4K), and 2.6 GiB peak per actor on 79 MP images.
PEAK_BYTES_PER_PIXEL = 24
ACTOR_BASE_BYTES = 2**30
MAX_REPORTED_ERRORS = 200
MAX_INPUT_BLOCKS = 10_000


@dataclass
class JobOutcome:
    """What one run did: its summary, its records in catalog order (for catalogs over ``keep_records``
    rows only those the report shows: thumbnailed rows and the first errors) and report thumbnails."""

    summary: RunSummary
    records: list[dict]
    thumbnails: dict[str, dict[str, bytes]] = field(default_factory=dict)
    run_id: str = ""


# ---------------------------------------------------------------- the driver


def plan_rows(catalog: Catalog, previous: dict[str, dict], report_thumbnails: int) -> pa.Table:
    """The dataset's input: one row per catalog row with its URLs and its previous record (JSON)."""
    rows = []
    for index, row in enumerate(catalog.rows):
        known = previous.get(row.id)
        rows.append(
            {
                "index": index,
                "id": row.id,
                "output": row.output,
                "output_refused": row.output_refused,
                "composite": row.composite,
                "mask": row.mask or "",
                "background": row.background or "",
                "reference_mask": row.reference_mask or "",
                "target": row.target or "",
                "thumbs": index < report_thumbnails,
                "previous": json.dumps({k: known.get(k) for k in PREVIOUS_KEYS}) if known else "",
            }
        )
    return pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)


@dataclass(frozen=True)
class ActorPlan:
    """How many model actors run and what each one reserves in Ray (``memory`` in bytes)."""

    actors: int
    num_cpus: float
    num_gpus: float
    memory: int


def actor_memory(max_pixels: int) -> int:
    """Bytes one actor may need: its process, torch and the model, plus one image of ``max_pixels``
    decoded, harmonized and encoded (``PEAK_BYTES_PER_PIXEL``)."""
    return ACTOR_BASE_BYTES + int(max_pixels) * PEAK_BYTES_PER_PIXEL


def plan_actors(cpus: float, gpus: float, memory: float, options: BatchConfig, max_pixels: int) -> ActorPlan:
    """Size the actor pool by GPUs, CPUs and memory, so it always starts and never runs out of memory.

    Args:
        cpus, gpus: the Ray cluster's CPUs and GPUs.
        memory: the Ray cluster's schedulable memory in bytes (Ray's ``memory`` resource: what the nodes
            have free for tasks and actors beside the object store).
        options: ``concurrency``, ``num_cpus``, ``num_gpus`` and ``memory_share`` as the user gave them.
        max_pixels: the largest image an actor may be given.

    Without ``concurrency``: one actor per GPU, else one per CPU up to ``MAX_AUTO_CPU_ACTORS``, and never
    more than ``memory_share`` of the memory holds at ``actor_memory(max_pixels)`` each (at least one).
    Each actor reserves that memory in Ray, so Ray never places more of them than fit.
    """
    num_gpus = options.num_gpus if options.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    budget = options.memory_share * memory
    per_actor = actor_memory(max_pixels)
    fit = max(1, int(budget // per_actor))
    if options.concurrency is not None:
        concurrency = options.concurrency
    elif num_gpus > 0:
        concurrency = max(1, min(fit, int(gpus // num_gpus)))
    else:
        concurrency = max(1, min(MAX_AUTO_CPU_ACTORS, int(cpus), fit))
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if num_gpus * concurrency > gpus + 1e-9:
        raise ValueError(
            f"{concurrency} actors x {num_gpus} GPU need {num_gpus * concurrency:g} GPUs; the Ray cluster has {gpus:g}"
        )
    gib = 2**30
    if concurrency * per_actor > budget and concurrency > 1:
        raise ValueError(
            f"{concurrency} actors x {per_actor / gib:.1f} GiB (images up to {max_pixels / 1e6:.0f} MP) "
            f"need {concurrency * per_actor / gib:.1f} GiB; {options.memory_share:g} of the Ray "
            f"cluster's {memory / gib:.1f} GiB is {budget / gib:.1f} GiB: lower concurrency or "
            "max_pixels"
        )
    if per_actor > budget:
        logger.warning(
            "one actor may need %.1f GiB for images up to %.0f MP, more than the %.1f GiB budget; running one actor",
            per_actor / gib,
            max_pixels / 1e6,
            budget / gib,
        )
    num_cpus = options.num_cpus if options.num_cpus is not None else min(1.0, cpus / concurrency)
    return ActorPlan(
        actors=concurrency, num_cpus=num_cpus, num_gpus=num_gpus, memory=int(min(per_actor, budget / concurrency))
    )


def actor_resources(options: BatchConfig, max_pixels: int) -> ActorPlan:
    """``plan_actors`` for the Ray cluster this process is connected to."""
    resources = ray.cluster_resources()
    return plan_actors(
        float(resources.get("CPU", 1)),
        float(resources.get("GPU", 0)),
        float(resources.get("memory", 0)),
        options,
        max_pixels,
    )


def build_dataset(plan: pa.Table, options: BatchConfig, model: ModelPayload, run_id: str, max_pixels: int):
    """The lazy Ray Data pipeline over ``plan`` (nothing runs until it is iterated)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    actors = actor_resources(options, max_pixels)
    concurrency = actors.actors
    logger.info(
        "%d model actors, each with %g CPU, %g GPU and %.1f GiB reserved (images up to %.0f MP)",
        concurrency,
        actors.num_cpus,
        actors.num_gpus,
        actors.memory / 2**30,
        max_pixels / 1e6,
    )
    # Small input blocks: records stream back block by block, and at least four blocks per actor keep
    # the pool busy to the end; but no more than MAX_INPUT_BLOCKS of them for huge catalogs.
    chunk = max(
        1,
        min(options.fetch_threads, math.ceil(plan.num_rows / (4 * concurrency))),
        math.ceil(plan.num_rows / MAX_INPUT_BLOCKS),
    )
    blocks = [plan.slice(start, chunk) for start in range(0, plan.num_rows, chunk)]
    dataset = ray.data.from_arrow(blocks)
    # One-row output blocks (this dataset's own context): a record streams back as soon as its row is done,
    # not when the rest of its input block is, so records reach the driver right after their outputs.
    dataset.context.target_max_block_size = 1
    dataset = dataset.map_batches(
        fetch_inputs,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=0,  # one call per block, as planned
        compute=ray.data.TaskPoolStrategy(size=min(len(blocks), max(4, 2 * concurrency))),
        fn_kwargs={
            "model_version": model.version,
            "jpeg_quality": options.jpeg_quality,
            "overwrite": options.overwrite,
            "threads": options.fetch_threads,
            "timeout_s": options.fetch_timeout_s,
        },
    )
    return dataset.map_batches(
        Harmonizer,
        batch_format="pyarrow",
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=actors.num_cpus,
        num_gpus=actors.num_gpus,
        memory=actors.memory,
        fn_constructor_kwargs={
            "model": ray.put(model),
            "jpeg_quality": options.jpeg_quality,
            "max_pixels": max_pixels,
            "run_id": run_id,
            "num_threads": max(1, int(actors.num_cpus)),
            "use_gpu": actors.num_gpus > 0,
        },
    )


class Progress:
    """Rows done / total with rate and ETA, logged at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, total: int, log: logging.Logger | logging.LoggerAdapter, every_s: float) -> None:
        self.total, self.log, self.every_s = total, log, every_s
        self.counts = {"ok": 0, "skipped": 0, "error": 0}
        self.started = self.last = time.monotonic()

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def update(self, statuses: list[str]) -> None:
        for status in statuses:
            self.counts[status] += 1
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            self.log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        return (
            f"progress {progress_line(self.done, self.total, elapsed)}: ok {self.counts['ok']}, "
            f"skipped {self.counts['skipped']}, error {self.counts['error']}"
        )


def run_job(
    catalog: Catalog,
    options: BatchConfig,
    model: ModelPayload,
    previous: dict[str, dict],
    run_id: str,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    on_records: Callable[[list[dict]], None] | None = None,
) -> JobOutcome:
    """Harmonize every row of ``catalog``; records go to fragments as they arrive (merge them afterwards).

    Args:
        catalog: the validated catalog.
        options: see BatchConfig.
        model: the resolved model (``load_model_payload(options.model_uri)``).
        previous: the latest record per id from earlier runs (``pipeline.results.load_previous``).
        run_id: names this run's fragments and is stamped on its records.
        log: where progress goes (a Prefect run logger in the flow).
        on_records: called with each arriving list of records, after they were written to a fragment
            buffer (used by tests to stop a job halfway).
    """
    log = log or logger
    max_pixels = options.max_pixels or get_settings().max_image_pixels
    started = time.monotonic()
    plan = plan_rows(catalog, previous, options.report_thumbnails)
    writer = FragmentWriter(catalog.results_dir, run_id, options.fragment_rows, options.fragment_seconds).start()
    progress = Progress(len(catalog), log, options.progress_every_s)
    totals = SummaryBuilder()
    keep_all = len(catalog) <= options.keep_records
    records: list[dict] = []
    kept_errors = 0
    thumbnails: dict[str, dict[str, bytes]] = {}
    try:
        dataset = build_dataset(plan, options, model, run_id, max_pixels)
        # No prefetching: it holds finished blocks back until its buffer fills, delaying records and progress.
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            arrived = []
            for row in batch.to_pylist():
                thumbs = {name: row.pop(f"thumb_{name}") for name in THUMBS}
                thumbs = {name: data for name, data in thumbs.items() if data}
                if thumbs:
                    thumbnails[row["id"]] = thumbs
                arrived.append({k: row[k] for k in RECORD_SCHEMA.names} | {"index": row["index"]})
            writer.add([{k: r[k] for k in RECORD_SCHEMA.names} for r in arrived])
            totals.add(arrived)
            for record in arrived:  # big catalogs: keep only what the report shows
                is_kept_error = record["status"] == "error" and kept_errors < MAX_REPORTED_ERRORS
                if keep_all or record["id"] in thumbnails or is_kept_error:
                    records.append(record)
                    kept_errors += record["status"] == "error"
            progress.update([r["status"] for r in arrived])
            if on_records is not None:
                on_records(arrived)
    finally:  # a job that fails still keeps the records of the rows it finished
        writer.close()
    records.sort(key=lambda r: r.pop("index"))
    summary = totals.build(len(catalog), time.monotonic() - started, model.version)
    log.info(
        "harmonized %d rows in %.1fs (%.2f rows/s): ok %d, skipped %d, error %d",
        summary.done,
        summary.seconds,
        summary.rows_per_s,
        summary.ok,
        summary.skipped,
        summary.error,
    )
    return JobOutcome(summary=summary, records=records, thumbnails=thumbnails, run_id=run_id)


def run_catalog(
    catalog: Catalog,
    options: BatchConfig,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    on_records: Callable[[list[dict]], None] | None = None,
) -> JobOutcome:
    """The whole job without Prefect: pin the model version, resume from earlier records, run, publish.

    The flow does the same steps as separate Prefect tasks; this is for notebooks, tests and benchmarks.
    """
    ray_init()
    model = load_model_payload(options.model_uri)
    previous = load_previous(catalog.results_dir)
    outcome = run_job(catalog, options, model, previous, new_run_id(), log=log, on_records=on_records)
    outcome.summary.results_url, _ = merge_results(catalog.results_dir)
    return outcome
