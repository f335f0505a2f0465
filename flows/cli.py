"""``ssh-harmonize``: the command line.

    ssh-harmonize demo                         the main job end to end on embedded defaults
    ssh-harmonize harmonize C.png M.png -o O.png [--model URL] [--background B.png]
    ssh-harmonize random-lut --seed 3 -o grade.cube

Heavy imports (torch, Prefect, Ray) happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import demo

    options = {"steps": args.steps} if args.steps else {}
    result = demo(data_root=args.data_root, **options)
    print(f"report: {result['report']}")
    return 0


def _cmd_harmonize(args: argparse.Namespace) -> int:
    from ssh_model.harmonize import harmonize_files
    from ssh_model.images import encode_image
    from ssh_model.settings import get_settings
    from ssh_model.storage import write_bytes_atomic
    from tasks.registry import load_registered_model

    model, version = load_registered_model(args.model or get_settings().model_uri, "cpu")
    logging.getLogger("ssh.cli").info("model %s", version)
    result = harmonize_files(args.composite, args.mask, model, background_url=args.background)
    fmt = "JPEG" if args.output.lower().endswith((".jpg", ".jpeg")) else "PNG"
    write_bytes_atomic(args.output, encode_image(result, fmt, quality=args.jpeg_quality))
    print(args.output)
    return 0


def _cmd_random_lut(args: argparse.Namespace) -> int:
    from ssh_model.lut import random_lut, write_cube

    write_cube(random_lut(args.seed, size=args.size, strength=args.strength), args.output)
    print(args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssh-harmonize", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job end to end on embedded defaults")
    demo.add_argument("--data-root", default=None, help="where everything is written (default: SSH_DATA_ROOT)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's own)")
    demo.set_defaults(run=_cmd_demo)

    harm = sub.add_parser("harmonize", help="harmonize one composite")
    harm.add_argument("composite")
    harm.add_argument("mask")
    harm.add_argument("-o", "--output", required=True)
    harm.add_argument("--model", default=None,
                      help="models:/name@alias, models:/name/N or a .safetensors URL (default: SSH_MODEL_URI)")
    harm.add_argument("--background", default=None, help="a clean background photo, when you have one")
    harm.add_argument("--jpeg-quality", type=int, default=95)
    harm.set_defaults(run=_cmd_harmonize)

    lut = sub.add_parser("random-lut", help="write a random realistic colour grade as a .cube file")
    lut.add_argument("--seed", type=int, required=True)
    lut.add_argument("--size", type=int, default=33)
    lut.add_argument("--strength", type=float, default=1.0)
    lut.add_argument("-o", "--output", required=True)
    lut.set_defaults(run=_cmd_random_lut)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore", "urllib3", "botocore", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
