"""Reading label images: PNG, TIFF, .npy and HDF5 (``file.h5:dataset``).

`read_labels(path)` returns a 2D or 3D array of non-negative integer ids (0 = background):

- PNG: palette (indexed) PNGs give the palette indices, 8/16-bit grayscale PNGs the stored
  values, RGB(A) PNGs one id per distinct colour (ids in the sorted order of the colours, black
  = 0; transparent pixels are black; an RGB image whose channels are all equal gives the gray
  value itself).
- TIFF (``.tif``, ``.tiff``; multi-page = 3D): the stored values; interleaved RGB(A) TIFFs as
  RGB PNGs (planar "RGB" TIFFs, as tifffile writes 3-slice volumes, stay as stored).
- ``.npy``: the stored array (no pickles).
- HDF5 (``.h5``, ``.hdf5``, ``.hdf``): ``file.h5:dataset`` names the dataset (groups with
  ``/``); a bare ``file.h5`` works when the file holds exactly one dataset.

Bool arrays become uint8, floats with integral values int64. Anything else (missing or
unreadable file, missing dataset, fractional or negative values, not 2D/3D) raises
PEAInputError naming the file and the problem.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from pea.errors import PEAInputError
from pea.metrics import check_labels

__all__ = ["LABEL_SUFFIXES", "H5_SUFFIXES", "atomic_write", "colour_ids", "read_h5", "read_labels",
           "remove_stale", "split_h5_path"]

H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".npy") + H5_SUFFIXES


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


TEMP_MARK = ".tmp"  # in the names of files being written: ".NAME.tmpPID.SUFFIX"


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in the same folder (same suffix) to write to; it becomes `path` when
    the block ends without error and is removed otherwise, so `path` is always either the old
    complete file or the new complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale(folder: str | os.PathLike) -> None:
    """Remove temporary files that killed runs left in `folder` (see `atomic_write`)."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(f".*{TEMP_MARK}*"):
            stale.unlink(missing_ok=True)


def split_h5_path(path: str) -> tuple[str, str | None]:
    """``'a.h5:grp/main'`` -> ``('a.h5', 'grp/main')``; other paths -> ``(path, None)``."""
    file, sep, dataset = path.rpartition(":")
    if sep and file.lower().endswith(H5_SUFFIXES) and dataset:
        return file, dataset
    return path, None


def colour_ids(rgb: np.ndarray) -> np.ndarray:
    """One id per distinct colour along the last axis (sorted by colour, black = 0; gray: the gray value)."""
    channels = [rgb[..., k] for k in range(rgb.shape[-1])]
    if all(np.array_equal(channels[0], c) for c in channels[1:]):
        return channels[0]
    packed = np.zeros(rgb.shape[:-1], dtype=np.uint64)
    for c in channels:
        packed = (packed << np.uint64(16)) | c.astype(np.uint64)
    colours, ids = np.unique(packed, return_inverse=True)
    return (ids.reshape(packed.shape) + (colours[0] != 0)).astype(np.min_scalar_type(colours.size))


def _drop_transparent(rgba: np.ndarray) -> np.ndarray:
    """RGB of an RGBA array with fully transparent pixels set to black."""
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 0
    return rgb


def _read_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        mode = img.mode
        if mode not in ("RGB", "RGBA"):
            arr = np.array(img)
            return arr[..., 0] if mode in ("LA", "PA") else arr
    import cv2  # keeps 16 bits per channel, which PIL would cut to 8

    bgr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise OSError("OpenCV cannot decode it")
    rgb = bgr[..., [2, 1, 0, 3][: bgr.shape[-1]]]
    return colour_ids(_drop_transparent(rgb) if rgb.shape[-1] == 4 else rgb)


def _read_tiff(path: str) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        arr = tif.asarray()
        page = tif.pages[0]
        rgb = (page.photometric == tifffile.PHOTOMETRIC.RGB
               and page.planarconfig == tifffile.PLANARCONFIG.CONTIG and arr.shape[-1] in (3, 4))
    if rgb:
        return colour_ids(_drop_transparent(arr) if arr.shape[-1] == 4 else arr[..., :3])
    return arr


def _datasets(h5file) -> list[str]:
    import h5py

    names: list[str] = []
    h5file.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def read_h5(path: str | os.PathLike, dataset: str | None = None) -> np.ndarray:
    """The dataset `dataset` of an HDF5 file (None: its only dataset). PEAInputError naming
    the file for a missing or unreadable file and a missing dataset."""
    import h5py

    path = str(path)
    if not os.path.isfile(path):
        raise PEAInputError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            names = _datasets(f)
            if dataset is None:
                if len(names) != 1:
                    raise PEAInputError(f"{path}: holds {len(names)} datasets ({', '.join(names) or 'none'}); "
                                        f"name one as {path}:DATASET")
                dataset = names[0]
            obj = f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                raise PEAInputError(f"{path}: no dataset {dataset!r} (datasets: {', '.join(names) or 'none'})")
            return obj[()]
    except OSError as err:
        raise PEAInputError(f"{path}: not a readable HDF5 file ({one_line(err)})") from None


def read_labels(path: str) -> np.ndarray:
    """The label image at `path` (see the module docstring for formats and conventions)."""
    file, dataset = split_h5_path(str(path))
    suffix = os.path.splitext(file)[1].lower()
    if suffix not in LABEL_SUFFIXES:
        raise PEAInputError(f"{path}: unsupported label file type {suffix or '(none)'!r}; "
                            f"use one of {', '.join(LABEL_SUFFIXES)}")
    if not os.path.isfile(file):
        raise PEAInputError(f"{path}: no such file")
    try:
        if suffix == ".png":
            arr = _read_png(file)
        elif suffix in (".tif", ".tiff"):
            arr = _read_tiff(file)
        elif suffix == ".npy":
            arr = np.load(file, allow_pickle=False)
        else:
            arr = read_h5(file, dataset)
    except PEAInputError:
        raise
    except Exception as err:  # any decoder failure is a bad file
        raise PEAInputError(f"{path}: cannot read label image ({one_line(err)})") from err
    arr = check_labels(np.asarray(arr), str(path))
    if arr.ndim not in (2, 3):
        raise PEAInputError(f"{path}: expected a 2D or 3D label image, got shape {arr.shape}")
    return arr
