"""Volumes read lazily, block by block: ``file.h5:dataset``, ``file.zarr/dataset``,
``file.n5/dataset`` and TIFF stacks; zarr containers written atomically.

`open_volume(spec)` is a context manager giving an array that slices (h5py, zarr, or the small
N5 reader below) without reading the volume; `to_unit` turns what was read into float32
intensities in [0, 1] (integers divided by their type's maximum, floats taken as they are).
Unreadable inputs are one-line `PEAInputError`s naming the file and the dataset.
"""
from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import os
import shutil
import zlib
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from pea.errors import PEAInputError
from pea.extras import require
from pea.io import H5_SUFFIXES, TEMP_MARK, one_line, split_h5_path

CONTAINERS = (".zarr", ".n5")
TIFF_SUFFIXES = (".tif", ".tiff")


def split_container(spec: str) -> tuple[str | None, str]:
    """``'a/b.zarr/raw/s0'`` -> ``('a/b.zarr', 'raw/s0')``; no container -> ``(None, '')``."""
    parts = Path(spec).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(CONTAINERS):
            return str(Path(*parts[: i + 1])), "/".join(parts[i + 1:])
    return None, ""


@contextmanager
def open_volume(spec: str) -> Iterator:
    """The (z, y, x) volume `spec` names, as an array read only where it is sliced."""
    stack = ExitStack()
    try:
        array = _checked(_open(spec, stack), spec)
    except (OSError, KeyError, ValueError, TypeError) as err:
        stack.close()
        if isinstance(err, PEAInputError):
            raise
        raise PEAInputError(f"{spec}: cannot read the volume ({one_line(err)})") from None
    with stack:
        yield array


def _open(spec: str, stack: ExitStack):
    file, dataset = split_h5_path(spec)
    container, key = split_container(spec)
    if file.lower().endswith(H5_SUFFIXES):
        import h5py

        if not os.path.isfile(file):
            raise PEAInputError(f"{spec}: no such file")
        f = stack.enter_context(h5py.File(file, "r"))
        names = _h5_datasets(f)
        name = dataset if dataset is not None else (names[0] if len(names) == 1 else None)
        if name is None or not isinstance(f.get(name), h5py.Dataset):
            raise PEAInputError(f"{spec}: name one dataset as {file}:DATASET (datasets: {', '.join(names) or 'none'})")
        return f[name]
    if container is not None:
        return _open_container(container, key, spec)
    if file.lower().endswith(TIFF_SUFFIXES):
        return _open_tiff(file)
    raise PEAInputError(f"{spec}: not a volume; use file.h5:DATASET, file.zarr/DATASET, file.n5/DATASET "
                        f"or a TIFF stack")


def _h5_datasets(f) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _checked(array, spec: str):
    if len(array.shape) != 3:
        raise PEAInputError(f"{spec}: expected a (z, y, x) volume, got shape {tuple(array.shape)}")
    if np.dtype(array.dtype).kind not in "biuf":
        raise PEAInputError(f"{spec}: dtype {array.dtype} is not an image type")
    return array


def _open_container(container: str, key: str, spec: str):
    if not os.path.isdir(container):
        raise PEAInputError(f"{spec}: no such container {container}")
    if container.lower().endswith(".n5"):
        return N5Array(Path(container) / key)
    zarr = require("zarr")

    node = zarr.open(container, mode="r", path=key) if key else zarr.open(container, mode="r")
    if not hasattr(node, "dtype"):
        raise PEAInputError(f"{spec}: {key or 'the root'} is a group, not an array "
                            f"(arrays: {', '.join(sorted(node.array_keys())) or 'none'})")
    return node


def _open_tiff(file: str):
    import tifffile
    zarr = require("zarr")

    if not os.path.isfile(file):
        raise PEAInputError(f"{file}: no such file")
    return zarr.open(tifffile.imread(file, aszarr=True), mode="r")


def to_unit(block: np.ndarray, where: str = "volume") -> np.ndarray:
    """Intensities in [0, 1] as float32: integers over their type's maximum, floats as they are."""
    block = np.asarray(block)
    if block.dtype.kind == "b":
        return block.astype(np.float32)
    if block.dtype.kind in "iu":
        return block.astype(np.float32) / np.float32(np.iinfo(block.dtype).max)
    if not np.isfinite(block).all():
        raise PEAInputError(f"{where}: the volume holds NaN or infinite values")
    return block.astype(np.float32)


def volume_identity(spec: str, sample: int = 32) -> str:
    """A digest of what identifies the volume `spec` names without reading it all: its
    shape and type, the size and modification time of its file (of the dataset's metadata
    in a zarr or N5 container) and the values of a corner and of the centre (`sample` voxels
    along each axis at most)."""
    container, key = split_container(spec)
    place = Path(container) / key if container else Path(split_h5_path(spec)[0])
    files = [place / name for name in (".zarray", "zarr.json", "attributes.json")] if place.is_dir() else [place]
    digest = hashlib.sha256(os.path.abspath(spec).encode())
    for file in [f for f in files if f.is_file()]:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    with open_volume(spec) as volume:
        shape = tuple(int(n) for n in volume.shape)
        digest.update(f"{shape}:{np.dtype(volume.dtype).str}".encode())
        for lo in ([0] * len(shape), [max(0, n // 2 - sample // 2) for n in shape]):
            box = tuple(slice(a, min(n, a + sample)) for a, n in zip(lo, shape))
            digest.update(np.ascontiguousarray(volume[box]).tobytes())
    return digest.hexdigest()


class N5Array:
    """A read-only N5 dataset (attributes.json and block files): raw, gzip, bzip2, xz, blosc
    or zstd blocks, axes reversed to numpy's (z, y, x) order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        attrs_file = self.path / "attributes.json"
        if not attrs_file.is_file():
            raise PEAInputError(f"{self.path}: no N5 dataset here (attributes.json missing)")
        attrs = json.loads(attrs_file.read_text())
        self.shape = tuple(int(n) for n in reversed(attrs["dimensions"]))
        self.chunks = tuple(int(n) for n in reversed(attrs["blockSize"]))
        self.dtype = np.dtype(attrs["dataType"])
        self.compression = attrs.get("compression", {"type": attrs.get("compressionType", "raw")})

    def _decode(self, raw: bytes) -> bytes:
        kind = self.compression.get("type", "raw")
        if kind == "raw":
            return raw
        if kind == "gzip":
            return zlib.decompress(raw, 47)  # gzip or zlib header
        if kind == "bzip2":
            return bz2.decompress(raw)
        if kind == "xz":
            return lzma.decompress(raw)
        import numcodecs

        codec = {"blosc": numcodecs.Blosc, "zstd": numcodecs.Zstd}.get(kind)
        if codec is None:
            raise PEAInputError(f"{self.path}: N5 compression {kind!r} is not supported")
        return bytes(codec().decode(raw))

    def _block(self, index: tuple[int, ...]) -> np.ndarray | None:
        file = self.path.joinpath(*[str(i) for i in reversed(index)])
        if not file.is_file():
            return None
        raw = file.read_bytes()
        mode, ndim = np.frombuffer(raw[:4], ">u2")
        dims = np.frombuffer(raw[4: 4 + 4 * ndim], ">u4")
        start = 4 + 4 * ndim + (4 if mode == 1 else 0)
        data = np.frombuffer(self._decode(raw[start:]), self.dtype.newbyteorder(">"))
        return data[: int(np.prod(dims))].reshape(tuple(int(d) for d in reversed(dims))).astype(self.dtype)

    def __getitem__(self, box) -> np.ndarray:
        box = tuple(box) + (slice(None),) * (len(self.shape) - len(tuple(box)))
        bounds = [b.indices(n)[:2] for b, n in zip(box, self.shape)]
        out = np.zeros([b - a for a, b in bounds], dtype=self.dtype)
        ranges = [range(a // c, -(-b // c)) for (a, b), c in zip(bounds, self.chunks)]
        for index in np.ndindex(*[len(r) for r in ranges]):
            chunk = tuple(r[i] for r, i in zip(ranges, index))
            data = self._block(chunk)
            if data is None:
                continue
            lo = [max(a, k * c) for (a, _), k, c in zip(bounds, chunk, self.chunks)]
            hi = [min(b, k * c + n) for (_, b), k, c, n in zip(bounds, chunk, self.chunks, data.shape)]
            src = tuple(slice(s - k * c, e - k * c) for s, e, k, c in zip(lo, hi, chunk, self.chunks))
            out[tuple(slice(s - a, e - a) for s, e, (a, _) in zip(lo, hi, bounds))] = data[src]
        return out


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `path` to write a container into; it replaces `path` when
    the block ends without error and is removed otherwise. Folders that killed runs left
    beside `path` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.stem}{TEMP_MARK}*{path.suffix}"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}{path.suffix}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        old = path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}.old{path.suffix}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
