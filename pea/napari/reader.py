"""The reader of `pea predict` outputs: OME-Zarr containers (the affinities as an image with
a channel axis, each label image as a labels layer, at their scale) and the older plain zarr
containers, and the TIFFs `pea predict` writes (labels, `_affinities`), which it marks. Other
files are left to other readers (`get_reader` returns None)."""
from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """napari's reader hook: a function reading `path`, or None when it is no pea output."""
    if not isinstance(path, (str, Path)):
        return None
    path = Path(path)
    if path.suffix.lower() == ".zarr" and pea_attributes(path) is not None:
        return read_container
    if path.suffix.lower() in (".tif", ".tiff") and tif_kind(path) is not None:
        return read_tif
    return None


def pea_attributes(path: Path) -> dict | None:
    """The attributes of a container `pea predict` wrote (they name its offsets), else None."""
    import zarr

    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except Exception:  # not a zarr group, or unreadable: someone else's
        return None
    return attrs if "offsets" in attrs and "arrays" in attrs else None


def read_container(path) -> list[tuple]:
    import zarr

    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    if "ome" not in attrs:  # a plain container: arrays at the root, unit scale
        names = list(attrs["arrays"].values()) + (["fragments"] if "fragments" in group else [])
        return [image_layer(group["affinities"], {}, attrs)] + [(group[n], {"name": n}, "labels") for n in names]
    layers = [image_layer(*multiscale_level(group, attrs["ome"]), attrs)]
    for name in dict(group["labels"].attrs)["ome"]["labels"]:
        label = group["labels"][name]
        data, placement = multiscale_level(label, dict(label.attrs)["ome"])
        layers.append((data, {"name": name, **placement}, "labels"))
    return layers


def multiscale_level(group, ome: dict) -> tuple:
    """The first (full-resolution) array of an NGFF multiscale group, and its scale and
    translation as napari's layer keywords."""
    dataset = ome["multiscales"][0]["datasets"][0]
    placement = {}
    for transform in dataset.get("coordinateTransformations", []):
        key = {"scale": "scale", "translation": "translate"}.get(transform["type"])
        if key:
            placement[key] = transform[transform["type"]]
    return group[dataset["path"]], placement


def image_layer(data, placement: dict, attrs: dict) -> tuple:
    return (data, {"name": "affinities", "colormap": "magma", "visible": False,
                   "metadata": {"offsets": attrs["offsets"]}, **placement}, "image")


def tif_kind(path: Path) -> str | None:
    """'labels' or 'affinities' for a TIFF `pea predict` wrote (its description says so)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            found = [m.get("pea") for m in (tif.shaped_metadata or ()) if isinstance(m, dict)]
    except (OSError, ValueError, tifffile.TiffFileError):
        return None
    return found[0] if found and found[0] in ("labels", "affinities") else None


def read_tif(path) -> list[tuple]:
    import tifffile

    path = Path(path)
    data = tifffile.imread(path)
    if tif_kind(path) == "affinities":
        return [(data, {"name": path.stem, "colormap": "magma"}, "image")]
    return [(data, {"name": path.stem}, "labels")]
