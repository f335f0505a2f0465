"""The flow commands of ``ssh-harmonize``, generated from the stage configs (``pipeline.configs``).

    ssh-harmonize ingest | build-triplets | train | retrain | compare-models | harmonize-batch CATALOG

Each command has an option per field of its flow's configs (the field's description is the help, its default
the default; a field two configs share is ``--<section>-<field>``) next to what the flow works on (a data
root, a version, a catalog). It builds the configs (a bad value is a one-line error), runs the flow in this
process with progress bars on a terminal, and prints the flow's result as JSON.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from typing import Any

import typer

from flows.cli_progress import progress_bars
from pipeline.configs import (
    VERSION,
    BatchConfig,
    CompareConfig,
    IngestConfig,
    StageConfig,
    TrainModelConfig,
    TripletConfig,
)

DATA_ROOT_HELP = "where data, models and the MLflow store live (default: SSH_DATA_ROOT)"
URL_NOTE = "a file or URL (s3://, http(s)://)"


def target(name: str, annotation: Any, default: Any, help: str, argument: bool = False) -> inspect.Parameter:
    """One parameter naming what a flow works on (an option, or with ``argument`` a positional argument)."""
    kind = typer.Argument(help=help) if argument else typer.Option(default, help=help)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=kind, annotation=annotation)


def use_data_root(data_root: str | None) -> None:
    """A ``--data-root`` becomes the setting every layer reads (registry lookups, Ray workers), not just the flow's."""
    if data_root:
        os.environ["SSH_DATA_ROOT"] = data_root


DATA_ROOT = target("data_root", str | None, None, DATA_ROOT_HELP)


def config_options(sections: dict[str, type[StageConfig]]) -> dict[str, tuple[str, str, inspect.Parameter]]:
    """option name -> (section, field, the typer parameter) for every field of the configs."""
    names = [field for config in sections.values() for field in config.model_fields]
    options = {}
    for section, config in sections.items():
        for field, info in config.model_fields.items():
            option = f"{section}_{field}" if names.count(field) > 1 else field
            default = info.get_default(call_default_factory=True)
            help_option = typer.Option(default, help=info.description, show_default=default is not None)
            parameter = inspect.Parameter(
                option, inspect.Parameter.KEYWORD_ONLY, default=help_option, annotation=info.annotation
            )
            options[option] = (section, field, parameter)
    return options


def flow_command(
    app: typer.Typer,
    name: str,
    summary: str,
    targets: list[inspect.Parameter],
    sections: dict[str, type[StageConfig]],
    run: Callable[..., dict[str, Any]],
) -> None:
    """Register ``name`` on ``app``: ``run(**targets, **{section: config})``, its result printed as JSON."""
    options = config_options(sections)

    def command(**values: Any) -> int:
        given = {option: values.pop(option) for option in options}
        given = {option: [] if value == [""] else value for option, value in given.items()}  # --baselines '': none
        configs = {
            section: config(**{field: given[o] for o, (s, field, _) in options.items() if s == section})
            for section, config in sections.items()
        }
        use_data_root(values.get("data_root"))
        with progress_bars():
            result = run(**values, **configs)
        print(json.dumps(result, indent=2, default=str))
        return 0

    command.__signature__ = inspect.Signature([*targets, *(p for _, _, p in options.values())])  # what typer reads
    command.__doc__ = summary
    app.command(name)(command)


# Flows are imported when their command runs: Prefect, Ray and torch cost seconds, --help should not.


def ingest(**kwargs: Any) -> dict[str, Any]:
    from flows.ingest_images import ingest_images

    return ingest_images(**kwargs)


def build_triplets(**kwargs: Any) -> dict[str, Any]:
    from flows.build_triplets import build_triplets as flow

    return flow(**kwargs)


def train(**kwargs: Any) -> dict[str, Any]:
    from flows.train_model import train_model

    return {key: value for key, value in train_model(**kwargs).items() if key != "evaluation"}


def retrain(**kwargs: Any) -> dict[str, Any]:
    from flows.retrain import retrain as flow

    return {key: value for key, value in flow(**kwargs).items() if key != "train"}


def compare_models(**kwargs: Any) -> dict[str, Any]:
    from flows.compare_models import compare_models as flow

    result = flow(**kwargs)
    print(result["table"])
    return {"run_id": result["run_id"], "models": result["models"]}


def harmonize_batch(**kwargs: Any) -> dict[str, Any]:
    from flows.harmonize_batch import harmonize_batch as flow

    return flow(**kwargs)


FLOW_COMMANDS = ("ingest", "build-triplets", "train", "retrain", "compare-models", "harmonize-batch")


def add_flow_commands(app: typer.Typer) -> None:
    version = target("version", str, VERSION, "the triplet version (a folder under triplets/)")
    run_name = target(
        "run_name", str | None, None, "the MLflow run name; for train also the checkpoint folder (same name: resume)"
    )
    flow_command(
        app,
        "ingest",
        "Add photos to the image manifest (flow ingest-images).",
        [DATA_ROOT],
        {"config": IngestConfig},
        ingest,
    )
    flow_command(
        app,
        "build-triplets",
        "Make dual-LUT triplet shards of the ingested photos with Ray Data (flow build-triplets).",
        [DATA_ROOT, version],
        {"config": TripletConfig},
        build_triplets,
    )
    flow_command(
        app,
        "train",
        "Train on a triplet version with Ray Train, track it in MLflow, register it and run the gate (flow train-model).",
        [DATA_ROOT, version, run_name],
        {"config": TrainModelConfig},
        train,
    )
    flow_command(
        app,
        "retrain",
        "The scheduled chain: ingest -> build-triplets -> train -> registry gate (flow retrain).",
        [DATA_ROOT, target("version", str | None, None, "the triplet version (default: named after the manifest)")],
        {"ingest": IngestConfig, "triplets": TripletConfig, "train": TrainModelConfig},
        retrain,
    )
    flow_command(
        app,
        "compare-models",
        "Models and baselines on the same evaluation set: a table and an image grid in MLflow (flow compare-models).",
        [
            DATA_ROOT,
            target("triplets", str | None, None, "a triplet version root whose val split is evaluated too"),
            run_name,
        ],
        {"config": CompareConfig},
        compare_models,
    )
    flow_command(
        app,
        "harmonize-batch",
        "Harmonize every composite of a catalog with Ray Data; results table and HTML report (flow harmonize-batch).",
        [
            target("catalog", str, None, f"a Parquet, CSV or JSONL catalog: {URL_NOTE}", argument=True),
            target("output_prefix", str | None, None, "the prefix every output lies under (default: under SSH_DATA_ROOT)"),
        ],
        {"config": BatchConfig},
        harmonize_batch,
    )
