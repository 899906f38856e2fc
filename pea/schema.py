"""Config keys and the types and ranges of their values.

A `Key` states one config key once: its default, its check and a one-line description. A
check is a small function, `check(value) -> None` when the value is acceptable, else a short
description of what is expected (for a one-line error). A schema is a mapping of section names
to mappings of key names to Keys (a top-level key such as NAME is a Key itself).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Key:
    """One config key: its default value, the check of its values, and what it means."""

    default: Any
    check: Check
    doc: str


def flatten(schema: Mapping, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Key]:
    """Every Key of a (nested) schema by its path, e.g. ('TRAIN', 'lr')."""
    out: dict[tuple[str, ...], Key] = {}
    for name, entry in schema.items():
        if isinstance(entry, Key):
            out[path + (name,)] = entry
        else:
            out.update(flatten(entry, path + (name,)))
    return out


def defaults(schema: Mapping) -> dict:
    """The nested mapping of the schema's default values (copies: callers may change them)."""
    return {name: copy.deepcopy(entry.default) if isinstance(entry, Key) else defaults(entry)
            for name, entry in schema.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(lo: float | None = None, hi: float | None = None, integer: bool = False, above: bool = False,
           none: bool = False) -> Check:
    """A finite number (an integer with `integer`) in [lo, hi] (lo excluded with `above`)."""
    kind = "an integer" if integer else "a number"
    bounds = [f"> {lo}" if above else f">= {lo}"] if lo is not None else []
    bounds += [f"<= {hi}"] if hi is not None else []
    want = " ".join([kind] + [" and ".join(bounds)] if bounds else [kind]) + (" or null" if none else "")

    def check(value: Any) -> str | None:
        if value is None:
            return None if none else want
        ok = _is_number(value) and (not integer or isinstance(value, int) or float(value).is_integer())
        ok = ok and (lo is None or (value > lo if above else value >= lo)) and (hi is None or value <= hi)
        return None if ok else want

    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def text(none: bool = False) -> Check:
    """A string (a path, a name), or null with `none`."""
    def check(value: Any) -> str | None:
        if value is None and none:
            return None
        return None if isinstance(value, str) and value else "a string" + (" or null" if none else "")

    return check


def choice(*values: Any) -> Check:
    def check(value: Any) -> str | None:
        return None if value in values else "one of " + ", ".join(str(v) for v in values)

    return check


def sequence(item: Check, length: int | None = None, none: bool = False, empty: bool = True) -> Check:
    """A list whose every item passes `item` (of `length` items when given)."""
    size = f"{length} " if length else ""

    def check(value: Any) -> str | None:
        if value is None and none:
            return None
        want = f"a list of {size}values, each {item(object()) or 'valid'}" + (" (or null)" if none else "")
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            return want
        if (length and len(value) != length) or (not empty and not value):
            return want
        return want if any(item(v) for v in value) else None

    return check


def mapping(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else "a mapping"


def any_of(*checks: Check) -> Check:
    """A value that passes at least one of `checks`."""
    def check(value: Any) -> str | None:
        wants = [c(value) for c in checks]
        return None if not all(wants) else " or ".join(wants)

    return check
