"""OME-Zarr (NGFF 0.5, zarr v3) from the containers `pea predict` writes: the affinities an
image with a channel axis and the spatial axes, each segmentation (and the fragments) a label
image of it under `labels/`, scaled by the voxel size (docs/export.md):

    OUT.zarr/                   zarr.json: ome.multiscales -> `affinities` (c, [z,] y, x); pea's attributes
    OUT.zarr/affinities         the affinities array
    OUT.zarr/labels/            zarr.json: ome.labels = [segmentation, ...]
    OUT.zarr/labels/NAME/0      a label array ([z,] y, x); NAME's zarr.json: ome.multiscales and
                                image-label.source.image = "../../"

`to_ngff` turns a finished container (its arrays at the root, zarr v2 or v3) into this layout
once, at the end, without copying data: zarr v2 metadata becomes v3 metadata (zarr's own
migration; chunk files stay, under the v2 chunk key encoding), label arrays move into
`labels/`, and the NGFF metadata is written. Blockwise writing stays chunk by chunk.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from pea.extras import require

NGFF_VERSION = "0.5"
IMAGE = "affinities"
V2_METADATA = (".zarray", ".zattrs", ".zgroup", ".zmetadata")


def spatial_axes(dims: int) -> list[dict]:
    return [{"name": a, "type": "space"} for a in ("z", "y", "x")[3 - dims:]]


def multiscale(name: str, axes: list[dict], path: str, scale: Sequence[float],
               translation: Sequence[float] | None = None) -> dict:
    """One single-level NGFF multiscale: the array at `path` with its scale (and translation)."""
    transforms = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if translation is not None and any(translation):
        transforms.append({"type": "translation", "translation": [float(t) for t in translation]})
    return {"name": name, "axes": axes, "datasets": [{"path": path, "coordinateTransformations": transforms}]}


def to_ngff(path: str | os.PathLike, labels: Sequence[str], voxel_size: Sequence[float],
            image_factor: Sequence[float] | None = None) -> None:
    """Make the container at `path` OME-Zarr in place (module docstring): `affinities`
    (C, *spatial) the image, the root arrays `labels` (*spatial) its label images, pixels
    `voxel_size` apart (per spatial axis). `image_factor`: label pixels per affinity pixel
    per axis when the affinities were computed at another resolution (2D DATA.scale); their
    pixel centres are then shifted to lie on the label grid. Each step can be run again, so
    a conversion cut short completes when called again; the image's metadata comes last."""
    zarr = require("zarr")

    root = Path(path)
    to_zarr_v3(root)
    dims = len(voxel_size)
    factor = list(image_factor or [1.0] * dims)
    set_dimension_names(root / IMAGE, ["c"] + [a["name"] for a in spatial_axes(dims)])
    for name in labels:
        array = root / "labels" / name / "0"
        if (root / name).is_dir():
            array.parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / name, array)
        set_dimension_names(array, [a["name"] for a in spatial_axes(dims)])
        group = zarr.open_group(root / "labels" / name, mode="a", zarr_format=3)
        group.attrs["ome"] = {"version": NGFF_VERSION,
                              "multiscales": [multiscale(name, spatial_axes(dims), "0", voxel_size)],
                              "image-label": {"source": {"image": "../../"}}}
    zarr.open_group(root / "labels", mode="a", zarr_format=3).attrs["ome"] = {"version": NGFF_VERSION,
                                                                              "labels": list(labels)}
    image = multiscale(IMAGE, [{"name": "c", "type": "channel"}] + spatial_axes(dims), IMAGE,
                       [1.0] + [v * f for v, f in zip(voxel_size, factor)],
                       [0.0] + [v * (f - 1) / 2 for v, f in zip(voxel_size, factor)])
    zarr.open_group(root, mode="r+").attrs["ome"] = {"version": NGFF_VERSION, "multiscales": [image]}


def is_ngff(path: str | os.PathLike) -> bool:
    """Whether `to_ngff` has finished with the container at `path`."""
    meta = Path(path) / "zarr.json"
    return meta.is_file() and "ome" in json.loads(meta.read_text()).get("attributes", {})


def to_zarr_v3(root: Path) -> None:
    """zarr v3 metadata for the zarr v2 hierarchy at `root` (zarr's metadata-only migration,
    which writes the root's metadata last), then the v2 metadata files removed."""
    if not (root / "zarr.json").is_file():
        from zarr.metadata.migrate_v3 import migrate_v2_to_v3
        from zarr.storage import LocalStore

        migrate_v2_to_v3(input_store=LocalStore(root))
    for folder, _, files in os.walk(root):
        for name in set(files) & set(V2_METADATA):
            os.unlink(Path(folder) / name)


def set_dimension_names(array: Path, names: Sequence[str]) -> None:
    """Write `dimension_names` (which NGFF 0.5 wants equal to the axes' names) into the zarr v3
    metadata of the array folder `array`."""
    meta_file = array / "zarr.json"
    meta = json.loads(meta_file.read_text())
    if len(meta["shape"]) != len(names):
        raise ValueError(f"{array}: shape {meta['shape']} has no axes {list(names)}")
    meta["dimension_names"] = list(names)
    tmp = meta_file.with_name("zarr.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_file)
