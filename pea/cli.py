"""The `pea` command: `pea evaluate`, `pea synth`, `pea convert`, `pea predict`, `pea train`,
`pea check-data`, `pea export`."""
from __future__ import annotations

import argparse
import importlib
import sys

from pea.errors import PEAInputError, PEARunError

# sub-command -> module exposing `add_arguments(parser)` and `run(args) -> int`
COMMANDS = {
    "evaluate": ("pea.evaluate", "score label images: SBD, DiC, AJI, PQ, VOI, ARAND, ..."),
    "synth": ("pea.synth.cli", "generate look-alike data sets in the real on-disk layouts"),
    "convert": ("pea.data.convert", "convert official annotations to the layout the readers use"),
    "predict": ("pea.predict", "segment your own images or volume (blockwise on dask for large volumes)"),
    "train": ("pea.train_cli", "train on your own folder of images or list of volumes with a preset"),
    "check-data": ("pea.datacheck", "check a folder of images or a list of volumes before training"),
    "export": ("pea.export", "write a trained network as a bioimage.io model package (.zip)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pea", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except PEAInputError as err:
        print(f"pea {args.command}: error: {err}", file=sys.stderr)
        return 2
    except PEARunError as err:  # a run that cannot go on (what it finished is kept)
        print(f"pea {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a read-only, missing or full place to write
        where = f"{err.filename}: " if err.filename else ""
        print(f"pea {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
