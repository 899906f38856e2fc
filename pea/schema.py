"""Types and ranges of config values: small checkers, each `check(value) -> None` when the value
is acceptable, else a short description of what is expected (for a one-line error)."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Check = Callable[[Any], "str | None"]


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


def anything(value: Any) -> str | None:
    return None
