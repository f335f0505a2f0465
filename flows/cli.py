"""``ssh-harmonize``: the command line.

    ssh-harmonize demo                         the main job end to end on embedded defaults
    ssh-harmonize harmonize C.png [M.png] -o O.png [--model URL] [--background B.png] [--reference-mask R.png]
    ssh-harmonize random-lut --seed 3 -o grade.cube
    ssh-harmonize composite FG.jpg [M.png] BG.jpg -o C.png [--grade SEED] [--strength S]
    ssh-harmonize evaluate catalog.parquet --model URI [--baselines identity,reinhard,histogram] [--json O.json]
    ssh-harmonize catalog iharmony4 DIR -o catalog.parquet [--split test] [--subsets HCOCO,HFlickr]
    ssh-harmonize catalog realhm DIR -o catalog.parquet
    ssh-harmonize serve [champion] [--host 127.0.0.1] [--port 5001]    mlflow models serve, checked first
    ssh-harmonize upgrade-model MODEL                                    re-register with the serving signature

Heavy imports (torch, Prefect, Ray) happen inside the command that needs them. Expected errors
(a missing or bad file, images of different sizes, an invalid catalog, an unknown model or alias, a
``models:/`` URI with no registry, an unknown URL scheme or a filesystem backend not installed) are
printed as one line naming the argument as given (a catalog's problems one a line) and exit with
status 2, without a traceback and without writing anything; ``evaluate`` exits with 1 when some rows
failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from flows import cli_commands


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import demo

    if args.data_root:  # the settings every layer reads (registry lookups, Ray workers), not just the demo's
        os.environ["SSH_DATA_ROOT"] = args.data_root
    options = {"steps": args.steps} if args.steps else {}
    result = demo(data_root=args.data_root, **options)
    print(
        f"\nHarmonized {result['harmonize']['total']} composites of held-out photos "
        f"(champion {result['champion']}):\n\n{result['table']}\n"
    )
    print(f"report: {result['report']}")
    return 0


def _cmd_harmonize(args: argparse.Namespace) -> int:
    from pipeline.registry import load_registered_model
    from ssh_model.images import encode_image
    from ssh_model.inference import harmonize_files
    from ssh_model.pretrained import PRETRAINED_URI
    from ssh_model.settings import get_settings

    fmt = cli_commands.output_format(cli_commands.writable(args.output))
    cli_commands.refuse_overwriting(
        args.output, [args.composite, *filter(None, [args.mask, args.background, args.reference_mask])]
    )
    model, version = load_registered_model(args.model or get_settings().model_uri or PRETRAINED_URI, "cpu")
    logging.getLogger("ssh.cli").info("model %s", version)
    result = harmonize_files(
        args.composite, args.mask, model, background_url=args.background, reference_mask_url=args.reference_mask
    )
    cli_commands.write_output(args.output, encode_image(result, fmt, quality=args.jpeg_quality))
    print(args.output)
    return 0


def _cmd_random_lut(args: argparse.Namespace) -> int:
    from ssh_model.lut import format_cube, random_lut

    cli_commands.writable(args.output)
    lut = random_lut(args.seed, size=args.size, strength=args.strength)
    cli_commands.write_output(args.output, format_cube(lut).encode("utf-8"))
    print(args.output)
    return 0


def _registered(ref: str) -> str:
    """The ``models:/`` URI of a registry reference ("champion", "3", a URI); else one line, exit 2."""
    from pipeline.registry import expand_model_ref

    uri = expand_model_ref(ref)
    if not uri.startswith("models:/"):
        raise cli_commands.InputError(
            f"model {ref}: only registered models are served; register it first (the demo and retrain flows do)"
        )
    return uri


def _cmd_serve(args: argparse.Namespace) -> int:
    import subprocess

    from pipeline.registry import load_registered_model, servable_problem
    from pipeline.serving import serve_command
    from ssh_model.errors import ModelError

    uri = _registered(args.model)
    load_registered_model(uri)  # the one-line errors of a missing registry, model or alias
    problem = servable_problem(uri)
    if problem:
        raise ModelError("not_a_model", problem)
    command, env = serve_command(uri, args.host, args.port)
    logging.getLogger("ssh.cli").info("serving %s: %s", uri, " ".join(command[1:]))
    return subprocess.call(command, env=env)


def _cmd_upgrade_model(args: argparse.Namespace) -> int:
    from pipeline.registry import load_registered_model, upgrade_version

    uri = _registered(args.model)
    load_registered_model(uri)
    print(upgrade_version(uri))
    return 0


URL_NOTE = "a file or URL (s3://, http(s)://)"
FORMATS_NOTE = "format from the extension: .png, .jpg/.jpeg or .webp"


def _add_composite(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser(
        "composite",
        help="make a test composite: a foreground's masked region pasted over a background",
        description="Paste the masked region of FOREGROUND over BACKGROUND (soft mask blend), optionally "
        "re-grading the foreground first with a random realistic colour grade, so the composite has "
        "a known colour mismatch. The three images must have the same size; inputs are never modified.",
    )
    comp.add_argument("foreground", metavar="FOREGROUND", help=f"the photo whose masked region is pasted: {URL_NOTE}")
    comp.add_argument(
        "mask",
        metavar="MASK",
        nargs="?",
        default=None,
        help="the foreground's mask, same size (white = foreground, grey = partly; an alpha channel is "
        "used when it has one); leave it out when FOREGROUND is an RGBA cut-out whose alpha is the "
        "mask",
    )
    comp.add_argument("background", metavar="BACKGROUND", help=f"the photo pasted onto, same size: {URL_NOTE}")
    comp.add_argument(
        "-o", "--output", required=True, help=f"where to write the composite ({FORMATS_NOTE}); written atomically"
    )
    comp.add_argument(
        "--grade",
        type=int,
        metavar="SEED",
        default=None,
        help="re-grade the foreground with random_lut(SEED) first (the grade random-lut --seed writes)",
    )
    comp.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="S",
        help="strength of the --grade: 0 = none, 1 = the full designed range (default 1)",
    )
    comp.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality, 1-100 (default 95)")
    comp.set_defaults(run=cli_commands.cmd_composite)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="score a model and the classical baselines on a catalog with ground truth",
        description="Run the model and the baselines on every row of CATALOG and print MSE, PSNR and fMSE "
        "(means per method) at full resolution and at 256x256, as iHarmony4 papers report them. "
        "Rows that cannot be scored (unreadable image, no target, sizes that differ) are listed with "
        "the reason and left out; the exit status is then 1.",
    )
    ev.add_argument(
        "catalog",
        metavar="CATALOG",
        help="a Parquet, CSV or JSONL table with id, composite, mask, target and optionally background "
        f"columns ({URL_NOTE}; relative paths are resolved against its folder)",
    )
    ev.add_argument(
        "--model", required=True, metavar="URI", help="models:/name@alias, models:/name/N, or a .safetensors file or URL"
    )
    ev.add_argument(
        "--baselines",
        default="identity,reinhard,histogram",
        help="comma-separated baselines to score too, from identity, reinhard, histogram; '' for none (default: all three)",
    )
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="score only the first N rows")
    ev.add_argument(
        "--json",
        default=None,
        metavar="OUT.json",
        help="also write the summary and every row's metrics to this file or URL (atomically)",
    )
    ev.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1 ... (default cpu)")
    ev.set_defaults(run=cli_commands.cmd_evaluate)


def _add_catalog(sub: argparse._SubParsersAction) -> None:
    cat = sub.add_parser(
        "catalog",
        help="write a catalog for a public benchmark's folder (iHarmony4, RealHM)",
        description="Write a catalog (id, composite, mask, target[, background]) of a public "
        "benchmark's folder, for evaluate and harmonize-batch.",
    )
    layouts = cat.add_subparsers(dest="layout", required=True, metavar="{iharmony4,realhm}")
    ih = layouts.add_parser(
        "iharmony4",
        help="iHarmony4: DIR/<subset>/{composite_images,masks,real_images}/ and <subset>_<split>.txt",
        description="Catalog of iHarmony4 (as DoveNet reads it): for each subset, the composites listed in "
        "DIR/<subset>/<subset>_<split>.txt; composite_images/a1_1_3.jpg has the mask masks/a1_1.png "
        "and the ground truth real_images/a1.jpg. Ids are <subset>/<composite name>.",
    )
    ih.add_argument("--split", choices=("test", "train"), default="test", help="which list to read (default test)")
    ih.add_argument(
        "--subsets",
        default=None,
        metavar="A,B",
        help="comma-separated subset folders, e.g. HCOCO,HAdobe5k,HFlickr,Hday2night "
        "(default: those of the four present in DIR)",
    )
    rh = layouts.add_parser(
        "realhm",
        help="RealHM: NAME.jpg (or NAME_composite.jpg), NAME_mask, NAME_gt, NAME_bg in each folder",
        description="Catalog of RealHM: every sample under DIR (searched recursively) as NAME_composite.jpg or "
        "NAME.jpg (composite), NAME_mask.jpg, NAME_gt.jpg (ground truth) and optionally NAME_bg.jpg, "
        "NAME_background.jpg or NAME_fore.jpg (background); .jpg, .jpeg or .png. NAME_small.jpg is "
        "ignored. Ids are <folder>/NAME.",
    )
    for layout in (ih, rh):
        layout.add_argument("dir", metavar="DIR", help="the dataset's folder: a local path or URL (s3://...)")
        layout.add_argument(
            "-o", "--output", required=True, help="the catalog to write: .parquet, .csv or .jsonl (paths in it are absolute)"
        )
        layout.add_argument(
            "--skip-incomplete",
            action="store_true",
            help="leave out samples with a missing file (and say how many) instead of failing",
        )
        layout.set_defaults(run=cli_commands.cmd_catalog)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssh-harmonize",
        description=__doc__.split("\n\n")[0],
        epilog="Run 'ssh-harmonize COMMAND --help' for a command's arguments.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job end to end on embedded defaults")
    demo.add_argument("--data-root", default=None, help="where everything is written (default: SSH_DATA_ROOT)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's own)")
    demo.set_defaults(run=_cmd_demo)

    harm = sub.add_parser("harmonize", help="harmonize one composite")
    harm.add_argument("composite", help=f"the composite image: {URL_NOTE}")
    harm.add_argument(
        "mask",
        nargs="?",
        default=None,
        help="its foreground mask, same size (white = foreground, grey = partly: soft masks are blend "
        "weights; 8/16-bit or float); leave it out when COMPOSITE is RGBA and its alpha is the mask",
    )
    harm.add_argument("-o", "--output", required=True, help=f"where to write the result ({FORMATS_NOTE})")
    harm.add_argument(
        "--model",
        default=None,
        help="models:/name@alias, models:/name/N, a .safetensors URL or 'pretrained' (default: "
        "SSH_MODEL_URI, else the weights shipped with the package)",
    )
    harm.add_argument("--background", default=None, help="a clean background photo, when you have one")
    harm.add_argument(
        "--reference-mask",
        default=None,
        metavar="R.png",
        help="match only this part of the background (white = use), e.g. the wall behind the object "
        "and not the sky; of the --background photo's size when given, else of the composite's",
    )
    harm.add_argument("--jpeg-quality", type=int, default=95, help="JPEG/WebP quality, 1-100 (default 95)")
    harm.set_defaults(run=_cmd_harmonize)

    lut = sub.add_parser("random-lut", help="write a random realistic colour grade as a .cube file")
    lut.add_argument("--seed", type=int, required=True, help="which grade: the same seed gives the same grade")
    lut.add_argument("--size", type=int, default=33, help="grid points per axis (default 33)")
    lut.add_argument("--strength", type=float, default=1.0, help="0 = identity, 1 = the full designed range")
    lut.add_argument("-o", "--output", required=True, help="the .cube file to write (file or URL)")
    lut.set_defaults(run=_cmd_random_lut)

    serve = sub.add_parser(
        "serve",
        help="serve a registered model over HTTP (mlflow models serve), after checking it can answer",
        description="Start MLflow's scoring server for a registered model. POST a dataframe_split JSON to "
        "/invocations with base64 PNG/JPEG bytes in the columns composite, mask (optional with an RGBA "
        "composite), background and reference_mask (optional); the answer's harmonized column holds "
        "base64 PNG bytes. A version registered before the serving signature existed is refused with "
        "the command that upgrades it.",
    )
    serve.add_argument(
        "model",
        nargs="?",
        default="champion",
        help="an alias (champion), a version number, or models:/name@alias (default champion)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5001, help="the port (default 5001)")
    serve.set_defaults(run=_cmd_serve)

    upgrade = sub.add_parser(
        "upgrade-model",
        help="re-register a model version with the serving signature",
        description="Log the weights of MODEL again with the serving signature, as a new "
        "version with its tags and description; its aliases move to the new "
        "version. Prints the new version number.",
    )
    upgrade.add_argument("model", help="an alias, a version number, or a models:/ URI")
    upgrade.set_defaults(run=_cmd_upgrade_model)

    _add_composite(sub)
    _add_evaluate(sub)
    _add_catalog(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for bad input, printed as one line without a traceback)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore", "urllib3", "botocore", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:  # bad input: ImageError, CatalogError, InputError, missing files
        logging.getLogger("ssh.cli").debug("%s failed", args.command, exc_info=True)
        print(f"ssh-harmonize {args.command}: error: {cli_commands.describe_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
