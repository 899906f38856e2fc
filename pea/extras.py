"""Optional dependencies and the pip extra that brings each one.

`require("zarr")` imports zarr, or raises `PEAInputError` with one line naming the extra to
install (`pip install "pea[blockwise]"`), which the commands print before exiting with code 2.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from pea.errors import PEAInputError

# module imported by pea -> the extra of pyproject.toml that lists its distribution
EXTRAS = {
    "zarr": "blockwise",
    "distributed": "blockwise",
    "waterz": "em",
    "mahotas": "em",
    "bioimageio.spec": "bioimageio",
    "napari": "napari",
}


def require(module: str) -> ModuleType:
    """The optional module `module` (a key of EXTRAS), imported; when it cannot be imported,
    PEAInputError naming the pip extra that brings it."""
    extra = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        reason = " ".join(str(err).split())
        raise PEAInputError(f'{module} cannot be imported ({reason}); install it with: '
                            f'pip install "pea[{extra}]"') from None
