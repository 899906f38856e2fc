"""`pea convert bbbc039 --data DIR`: official BBBC039 colour masks -> 16-bit instance labels.

The official masks (``DIR/masks/NAME.png``) are 8-bit RGB PNGs with a black background in
which every nucleus is painted in one colour and touching nuclei get different colours,
so colours repeat across the image. An object is a connected region (8-neighbourhood) of
one colour. Objects under ``min_size`` pixels (micronuclei) are removed, the rest are
numbered 1..n in raster order of their first pixel and written to
``DIR/label_instance/NAME.png`` as a 16-bit grayscale PNG.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import tifffile
from skimage.measure import label as connected_components

from pea.errors import PEAInputError
from pea.io import colour_ids

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_ID = np.iinfo(np.uint16).max


def _colour_code(mask: np.ndarray) -> np.ndarray:
    """One integer per pixel that is unique for each RGB colour (alpha is ignored, black = 0)."""
    if mask.dtype != np.uint8:
        raise PEAInputError(
            f"mask dtype {mask.dtype}: BBBC039 masks are 8-bit (uint8) colour images")
    if mask.ndim == 2:
        return mask.astype(np.int32)
    if mask.ndim != 3 or mask.shape[2] not in (3, 4):
        raise PEAInputError(
            f"mask shape {mask.shape}: expected (H, W), (H, W, 3) RGB or (H, W, 4) RGBA")
    return colour_ids(mask[..., :3])


def masks_to_instances(mask: np.ndarray, min_size: int = 25) -> np.ndarray:
    """Instance ids (uint16, 0 = background, 1..n consecutive) from a colour-coded mask.

    Connected regions (8-neighbourhood) of equal colour are objects: touching objects of
    different colours stay apart and the disconnected parts of one colour become separate
    objects. Objects with fewer than ``min_size`` pixels are removed.
    """
    components = connected_components(_colour_code(mask), background=0, connectivity=2)
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_size
    keep[0] = False
    n = int(keep.sum())
    if n > MAX_ID:
        raise PEAInputError(
            f"mask of shape {mask.shape} holds {n} objects; at most {MAX_ID} fit in 16 bits")
    new_ids = np.zeros(sizes.size, dtype=np.uint16)
    new_ids[keep] = np.arange(1, n + 1, dtype=np.uint16)
    return new_ids[components]


def read_colour_mask(path: Path) -> np.ndarray:
    """Read a mask PNG as (H, W) or RGB(A) uint8; raise naming the file when it is not one."""
    with open(path, "rb") as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            raise PEAInputError(f"{path}: not a PNG file")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise PEAInputError(f"{path}: unreadable PNG")
    if mask.ndim == 3 and mask.shape[2] >= 3:
        mask = mask[..., [2, 1, 0] + list(range(3, mask.shape[2]))]  # BGR(A) -> RGB(A)
    return mask


def _image_shape(path: Path) -> tuple[int, ...]:
    if not path.is_file():
        raise PEAInputError(f"{path}: image for this mask is missing")
    try:
        with tifffile.TiffFile(path) as tif:
            return tuple(tif.pages[0].shape)
    except (tifffile.TiffFileError, OSError, IndexError) as err:
        raise PEAInputError(f"{path}: unreadable TIFF image ({err})") from err


def write_label(path: Path, labels: np.ndarray) -> None:
    """Write instance ids as a 16-bit grayscale PNG."""
    if not cv2.imwrite(str(path), labels.astype(np.uint16)):
        raise PEAInputError(f"{path}: could not write the label PNG")


def convert_bbbc039(data_dir: str | Path, min_size: int = 25) -> int:
    """Write ``label_instance/NAME.png`` for every ``masks/NAME.png``; return how many."""
    data_dir = Path(data_dir)
    mask_dir = data_dir / "masks"
    if not mask_dir.is_dir():
        raise PEAInputError(f"{mask_dir}: folder of official masks is missing")
    paths = sorted(mask_dir.glob("*.png"))
    if not paths:
        raise PEAInputError(f"{mask_dir}: holds no .png masks")
    out_dir = data_dir / "label_instance"
    out_dir.mkdir(exist_ok=True)
    for path in paths:
        mask = read_colour_mask(path)
        image_path = data_dir / "images" / f"{path.stem}.tif"
        image_shape = _image_shape(image_path)
        if mask.shape[:2] != image_shape[:2]:
            raise PEAInputError(
                f"{path}: mask shape {mask.shape[:2]} differs from image {image_path} "
                f"shape {image_shape[:2]}")
        try:
            labels = masks_to_instances(mask, min_size=min_size)
        except PEAInputError as err:
            raise PEAInputError(f"{path}: {err}") from err
        write_label(out_dir / path.name, labels)
    return len(paths)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", required=True)
    p = sub.add_parser(
        "bbbc039", help="BBBC039 masks/*.png (colour-coded) -> label_instance/*.png (uint16)")
    p.add_argument("--data", required=True, help="folder with images/, masks/ (and metadata/)")
    p.add_argument("--min-size", type=int, default=25,
                   help="remove objects with fewer pixels (default 25, as the paper)")


def run(args: argparse.Namespace) -> int:
    if args.min_size < 0:
        raise PEAInputError(f"--min-size {args.min_size}: must be >= 0")
    n = convert_bbbc039(args.data, min_size=args.min_size)
    print(f"wrote {n} label images to {Path(args.data) / 'label_instance'}")
    return 0
