"""`pea synth DATASET --out DIR --seed N ...`: write look-alike data in the real layout."""
from __future__ import annotations

import argparse
import importlib

# data set -> generator module exposing `add_arguments(parser)` and `run(args) -> int`
GENERATORS = {
    "cvppp": "pea.synth.cvppp",
    "bbbc039": "pea.synth.bbbc039",
    "ac3ac4": "pea.synth.em",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", required=True)
    for name, module in GENERATORS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_generator=module)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._generator).run(args) or 0)
