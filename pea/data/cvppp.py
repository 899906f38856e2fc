"""CVPPP A1 reader (docs/method.md section 9): train/plantNNN_{rgb,label,fg}.png,
test/plantNNN_{rgb,fg}.png, and valid_set/local_20_1.txt naming the held-out plants."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pea import schema as S
from pea.augment import AUGMENT_2D_KEYS
from pea.config import register_reader
from pea.data.common import Sample, read_list, read_mask, read_rgb, rescale
from pea.data.common import train_dataset_2d as train_dataset  # noqa: F401 (reader interface)
from pea.errors import PEAInputError
from pea.io import atomic_write, read_labels
from pea.schema import Key

DATASET_NAME = "cvppp"
SPLITS = ("train", "validation", "test")
DATA_KEYS = {
    "valid_list": Key("valid_set/local_20_1.txt", S.text(), "the held-out training plants, a list under data_dir"),
    **AUGMENT_2D_KEYS,
}
register_reader(DATASET_NAME, DATA_KEYS)


def plant_ids(folder: Path) -> list[str]:
    """Sorted plant ids (e.g. 'plant002') of `folder`; a plant with a label or mask but no
    RGB image is an error naming the missing file."""
    if not folder.is_dir():
        raise PEAInputError(f"{folder}: CVPPP folder not found")
    ids = {p.name.rsplit("_", 1)[0] for suffix in ("rgb", "label", "fg") for p in folder.glob(f"*_{suffix}.png")}
    missing = sorted(i for i in ids if not (folder / f"{i}_rgb.png").is_file())
    if missing:
        raise PEAInputError(f"{folder / (missing[0] + '_rgb.png')}: image not found (its label or mask is there)")
    return sorted(ids)


def split_ids(data_dir: str | Path, split: str, valid_list: str) -> list[str]:
    """Ids of a split: training plants minus the validation list, the list itself, or test."""
    data_dir = Path(data_dir)
    if split not in SPLITS:
        raise PEAInputError(f"unknown CVPPP split '{split}' (use one of {', '.join(SPLITS)})")
    if split == "test":
        return plant_ids(data_dir / "test")
    train = plant_ids(data_dir / "train")
    valid = read_list(data_dir / valid_list)
    missing = sorted(set(valid) - set(train))
    if missing:
        raise PEAInputError(f"{data_dir / valid_list}: ids not in {data_dir / 'train'}: {', '.join(missing[:5])}")
    if split == "validation":
        return valid
    held = set(valid)
    return [i for i in train if i not in held]


def load_split(data_cfg, split: str) -> list[Sample]:
    """Read every image of a split at the configured scale."""
    data_dir = Path(data_cfg["data_dir"])
    folder = data_dir / ("test" if split == "test" else "train")
    scale = float(data_cfg["scale"])
    samples = []
    for pid in split_ids(data_dir, split, data_cfg["valid_list"]):
        image = read_rgb(folder / f"{pid}_rgb.png")
        shape = image.shape[:2]
        gt = labels = fg = None
        if split != "test":
            gt = read_labels(str(folder / f"{pid}_label.png")).astype(np.int32)
            if gt.shape != shape:
                raise PEAInputError(f"{folder / f'{pid}_label.png'}: shape {gt.shape} differs from the image {shape}")
            labels = rescale(gt, scale, nearest=True)
        fg_path = folder / f"{pid}_fg.png"
        if fg_path.is_file():
            fg = rescale(read_mask(fg_path).astype(np.uint8), scale, nearest=True).astype(bool)
        elif labels is not None:
            fg = labels > 0
        samples.append(Sample(pid, rescale(image, scale, nearest=False), labels, fg, shape, gt))
    return samples


VALID_SPLIT = "validation"
METRICS = ("sbd", "dic", "voi", "arand")


EXAMPLE_SUBMISSION = "submission_example.h5"  # the challenge's example file, in DATA.data_dir


def write_submission(out_dir: str | Path, segs: dict[str, np.ndarray], data_cfg) -> Path:
    """The challenge file submission.h5: a copy of the challenge's example file (when
    DATA.data_dir holds it) with A1/plantNNN/label replaced, else one built from scratch."""
    import shutil

    path = Path(out_dir) / "submission.h5"
    example = Path(data_cfg["data_dir"]) / EXAMPLE_SUBMISSION
    with atomic_write(path) as tmp:
        if example.is_file():
            shutil.copyfile(example, tmp)
        _write_labels(tmp, segs, "a" if example.is_file() else "w")
    return path


def _write_labels(path: Path, segs: dict[str, np.ndarray], mode: str) -> None:
    """A1/NAME/label datasets, replacing those already there."""
    import h5py

    with h5py.File(path, mode) as f:
        for name, seg in sorted(segs.items()):
            key = f"A1/{name}/label"
            if key in f:
                del f[key]
            dtype = np.uint8 if seg.max() < 256 else np.uint16
            f.create_dataset(key, data=seg.astype(dtype), compression="gzip")


SUBMISSIONS = {"test": write_submission}  # split -> writer of the challenge file
