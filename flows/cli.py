"""``ssh-harmonize``: the one command line (typer).

    ssh-harmonize demo                         the main job end to end on embedded defaults
    ssh-harmonize harmonize C.png [M.png] -o O.png [--model URL] [--background B.png] [--reference-mask R.png]
    ssh-harmonize random-lut --seed 3 -o grade.cube
    ssh-harmonize composite FG.jpg [M.png] BG.jpg -o C.png [--grade SEED] [--strength S]
    ssh-harmonize evaluate catalog.parquet --model URI [--baselines identity,reinhard,histogram] [--json O.json]
    ssh-harmonize catalog iharmony4 DIR -o catalog.parquet [--split test] [--subsets HCOCO,HFlickr]
    ssh-harmonize catalog realhm DIR -o catalog.parquet
    ssh-harmonize serve [champion] [--host 127.0.0.1] [--port 5001]    mlflow models serve, checked first
    ssh-harmonize upgrade-model MODEL                                    re-register with the serving signature

and one command per flow, whose options are generated from the flow's stage configs
(``pipeline.configs``: every field an option, its description the help, its default the default):

    ssh-harmonize ingest | build-triplets | train | retrain | compare-models | harmonize-batch CATALOG

Heavy imports (torch, Prefect, Ray) happen inside the command that needs them. Expected errors
(a missing or bad file, images of different sizes, an invalid catalog or config, an unknown model or
alias, a ``models:/`` URI with no registry, an unknown URL scheme or a filesystem backend not installed)
are printed as one line naming the argument as given (a catalog's problems one a line) and exit with
status 2, without a traceback and without writing anything; ``evaluate`` exits with 1 when some rows
failed.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler

from flows import cli_commands
from flows.cli_flows import DATA_ROOT_HELP, FLOW_COMMANDS, URL_NOTE, add_flow_commands, use_data_root
from flows.cli_progress import progress_bars
from pipeline.configs import BatchConfig, demo_training

app = typer.Typer(
    name="ssh-harmonize",
    help="Self-supervised image harmonization: harmonize composites, and run the pipeline that trains the model.",
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)
catalog_app = typer.Typer(
    help="Write a catalog (id, composite, mask, target[, background]) of a public benchmark's folder, for "
    "evaluate and harmonize-batch.",
    rich_markup_mode=None,
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")

FORMATS_NOTE = "format from the extension: .png, .jpg/.jpeg or .webp"
Output = Annotated[str, typer.Option("-o", "--output", metavar="OUT", help=f"where to write it ({FORMATS_NOTE})")]
DataRoot = Annotated[str | None, typer.Option(help=DATA_ROOT_HELP)]


add_flow_commands(app)


# -- the hand-written commands ----------------------------------------------------------------------


@app.command()
def demo(
    data_root: DataRoot = None,
    steps: Annotated[int, typer.Option(help="training steps")] = demo_training().steps,
) -> int:
    """Run the main job end to end on embedded defaults."""
    from flows.demo import demo as demo_flow

    use_data_root(data_root)
    with progress_bars():
        result = demo_flow(data_root=data_root, train=demo_training().model_copy(update={"steps": steps}))
    print(
        f"\nHarmonized {result['harmonize']['total']} composites of held-out photos "
        f"(champion {result['champion']}):\n\n{result['table']}\n"
    )
    print(f"report: {result['report']}")
    return 0


@app.command()
def harmonize(
    composite: Annotated[str, typer.Argument(metavar="COMPOSITE", help=f"the composite image: {URL_NOTE}")],
    mask: Annotated[
        str | None,
        typer.Argument(
            metavar="[MASK]",
            help="its foreground mask, same size (white = foreground, grey = partly: soft masks are blend weights; "
            "8/16-bit or float); leave it out when COMPOSITE is RGBA and its alpha is the mask",
        ),
    ] = None,
    output: Output = ...,
    model: Annotated[
        str | None,
        typer.Option(
            help="models:/name@alias, models:/name/N, a .safetensors URL or 'pretrained' (default: SSH_MODEL_URI, "
            "else the weights shipped with the package)"
        ),
    ] = None,
    background: Annotated[str | None, typer.Option(help="a clean background photo, when you have one")] = None,
    reference_mask: Annotated[
        str | None,
        typer.Option(
            metavar="R.png",
            help="match only this part of the background (white = use), e.g. the wall behind the object and not "
            "the sky; of the --background photo's size when given, else of the composite's",
        ),
    ] = None,
    jpeg_quality: Annotated[int, typer.Option(help="JPEG/WebP quality, 1-100")] = BatchConfig().jpeg_quality,
) -> int:
    """Harmonize one composite."""
    from pipeline.registry import load_registered_model
    from ssh_model.images import encode_image
    from ssh_model.inference import harmonize_files
    from ssh_model.pretrained import PRETRAINED_URI
    from ssh_model.settings import get_settings

    fmt = cli_commands.output_format(cli_commands.writable(output))
    cli_commands.refuse_overwriting(output, [composite, *filter(None, [mask, background, reference_mask])])
    network, version = load_registered_model(model or get_settings().model_uri or PRETRAINED_URI, "cpu")
    logging.getLogger("ssh.cli").info("model %s", version)
    result = harmonize_files(composite, mask, network, background_url=background, reference_mask_url=reference_mask)
    cli_commands.write_output(output, encode_image(result, fmt, quality=jpeg_quality))
    print(output)
    return 0


@app.command("random-lut")
def random_lut(
    seed: Annotated[int, typer.Option(help="which grade: the same seed gives the same grade")],
    output: Annotated[str, typer.Option("-o", "--output", metavar="OUT", help="the .cube file to write (file or URL)")],
    size: Annotated[int, typer.Option(help="grid points per axis")] = 33,
    strength: Annotated[float, typer.Option(help="0 = identity, 1 = the full designed range")] = 1.0,
) -> int:
    """Write a random realistic colour grade as a .cube file."""
    from ssh_model.lut import format_cube
    from ssh_model.lut import random_lut as make_lut

    cli_commands.writable(output)
    cli_commands.write_output(output, format_cube(make_lut(seed, size=size, strength=strength)).encode("utf-8"))
    print(output)
    return 0


@app.command()
def composite(
    images: Annotated[
        list[str],
        typer.Argument(
            metavar="FOREGROUND [MASK] BACKGROUND",
            help="the photo whose masked region is pasted, its mask (same size; leave it out when FOREGROUND is an "
            f"RGBA cut-out whose alpha is the mask) and the photo pasted onto: {URL_NOTE}",
        ),
    ],
    output: Output = ...,
    grade: Annotated[
        int | None,
        typer.Option(metavar="SEED", help="re-grade the foreground with random_lut(SEED) first (what random-lut writes)"),
    ] = None,
    strength: Annotated[
        float | None, typer.Option(metavar="S", help="strength of the --grade: 0 = none, 1 = the full range (default 1)")
    ] = None,
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality, 1-100")] = BatchConfig().jpeg_quality,
) -> int:
    """Make a test composite: paste the masked region of FOREGROUND over BACKGROUND (soft mask blend),
    optionally re-grading the foreground first, so the composite has a known colour mismatch. The images
    must have the same size; inputs are never modified."""
    if len(images) not in (2, 3):
        raise click.UsageError(f"expected FOREGROUND [MASK] BACKGROUND, got {len(images)} images")
    foreground, *mask, background = images
    return cli_commands.cmd_composite(foreground, mask[0] if mask else None, background, output, grade, strength, quality)


@app.command()
def evaluate(
    catalog: Annotated[
        str,
        typer.Argument(
            metavar="CATALOG",
            help="a Parquet, CSV or JSONL table with id, composite, mask, target and optionally background columns "
            f"({URL_NOTE}; relative paths are resolved against its folder)",
        ),
    ],
    model: Annotated[
        str, typer.Option(metavar="URI", help="models:/name@alias, models:/name/N, or a .safetensors file or URL")
    ],
    baselines: Annotated[
        str | None,
        typer.Option(
            help="comma-separated baselines scored too, from identity, reinhard, histogram; '' for none (default: all)"
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="score only the first N rows")] = None,
    json_out: Annotated[
        str | None,
        typer.Option("--json", metavar="OUT.json", help="also write the summary and every row's metrics here"),
    ] = None,
    device: Annotated[str, typer.Option(help="where the model runs: cpu, cuda, cuda:1 ...")] = "cpu",
) -> int:
    """Score a model and the classical baselines on a catalog with ground truth: MSE, PSNR and fMSE (means per
    method) at full resolution and at 256x256, as iHarmony4 papers report them. Rows that cannot be scored are
    listed with the reason and left out; the exit status is then 1."""
    return cli_commands.cmd_evaluate(catalog, model, baselines, limit, json_out, device)


SKIP_INCOMPLETE = typer.Option(help="leave out samples with a missing file (and say how many) instead of failing")
DATASET_DIR = typer.Argument(metavar="DIR", help="the dataset's folder: a local path or URL (s3://...)")
CATALOG_OUT = typer.Option("-o", "--output", help="the catalog to write: .parquet, .csv or .jsonl (absolute paths)")


@catalog_app.command()
def iharmony4(
    folder: Annotated[str, DATASET_DIR],
    output: Annotated[str, CATALOG_OUT],
    split: Annotated[str, typer.Option(help="which list to read: test or train")] = "test",
    subsets: Annotated[
        str | None,
        typer.Option(
            metavar="A,B",
            help="comma-separated subset folders, e.g. HCOCO,HAdobe5k,HFlickr,Hday2night (default: those present)",
        ),
    ] = None,
    skip_incomplete: Annotated[bool, SKIP_INCOMPLETE] = False,
) -> int:
    """iHarmony4: DIR/<subset>/{composite_images,masks,real_images}/ and <subset>_<split>.txt (as DoveNet reads
    it); composite_images/a1_1_3.jpg has the mask masks/a1_1.png and the ground truth real_images/a1.jpg."""
    if split not in ("test", "train"):
        raise click.BadParameter(f"{split!r} is not test or train", param_hint="--split")
    return cli_commands.cmd_catalog("iharmony4", folder, output, skip_incomplete, split, subsets)


@catalog_app.command()
def realhm(
    folder: Annotated[str, DATASET_DIR],
    output: Annotated[str, CATALOG_OUT],
    skip_incomplete: Annotated[bool, SKIP_INCOMPLETE] = False,
) -> int:
    """RealHM: every sample under DIR as NAME_composite.jpg or NAME.jpg, NAME_mask.jpg, NAME_gt.jpg (ground
    truth) and optionally NAME_bg.jpg, NAME_background.jpg or NAME_fore.jpg; NAME_small.jpg is ignored."""
    return cli_commands.cmd_catalog("realhm", folder, output, skip_incomplete)


def registered(ref: str) -> str:
    """The ``models:/`` URI of a registry reference ("champion", "3", a URI); else one line, exit 2."""
    from pipeline.registry import expand_model_ref

    uri = expand_model_ref(ref)
    if not uri.startswith("models:/"):
        raise cli_commands.InputError(
            f"model {ref}: only registered models are served; register it first (the demo and retrain flows do)"
        )
    return uri


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="an alias (champion), a version number, or models:/name@alias")] = "champion",
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the port")] = 5001,
) -> int:
    """Serve a registered model over HTTP (mlflow models serve) after checking it can answer. POST a
    dataframe_split JSON to /invocations with base64 PNG/JPEG bytes in the columns composite, mask (optional
    with an RGBA composite), background and reference_mask (optional); the harmonized column holds base64 PNG."""
    import subprocess

    from pipeline.registry import load_registered_model, servable_problem
    from pipeline.serving import serve_command
    from ssh_model.errors import ModelError

    uri = registered(model)
    load_registered_model(uri)  # the one-line errors of a missing registry, model or alias
    problem = servable_problem(uri)
    if problem:
        raise ModelError("not_a_model", problem)
    command, env = serve_command(uri, host, port)
    logging.getLogger("ssh.cli").info("serving %s: %s", uri, " ".join(command[1:]))
    return subprocess.call(command, env=env)


@app.command("upgrade-model")
def upgrade_model(model: Annotated[str, typer.Argument(help="an alias, a version number, or a models:/ URI")]) -> int:
    """Re-register a model version with the serving signature (a new version; its aliases move to it)."""
    from pipeline.registry import load_registered_model, upgrade_version

    uri = registered(model)
    load_registered_model(uri)
    print(upgrade_version(uri))
    return 0


def describe(err: BaseException) -> str:
    if isinstance(err, ValidationError):  # a config field's bad value, one line per field
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
    return cli_commands.describe_error(err)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for bad input, printed as one line without a traceback)."""
    console = Console(stderr=True)
    if console.is_terminal:  # rich's columns on a terminal; plain lines (no wrapping) in a log file
        logging.basicConfig(
            level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
        )
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore", "urllib3", "botocore", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in args if not arg.startswith("-")), "")
    try:
        status = app(args=args, prog_name="ssh-harmonize", standalone_mode=False)
    except click.ClickException as err:  # usage errors: the message and the usage line, exit 2
        err.show()
        return err.exit_code
    except click.exceptions.Abort:
        return 130
    except (ValueError, OSError) as err:  # bad input: ImageError, CatalogError, InputError, missing files
        # a flow runs a whole pipeline: its traceback says where a deep error came from
        flow_failed = command in FLOW_COMMANDS and not isinstance(err, ValidationError)
        logging.getLogger("ssh.cli").log(
            logging.ERROR if flow_failed else logging.DEBUG, "%s failed", command, exc_info=True
        )
        print(f"ssh-harmonize {command}: error: {describe(err)}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
