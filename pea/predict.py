"""`pea predict`: segment your own images or volume with a trained network.

    pea predict --model CKPT --input IN --output OUT [--config NAME|PATH] [--device DEV]
                [--format tif|ome-zarr] [--voxel-size [Z] Y X]

- 2D (a network with 2D offsets): IN is a folder, a glob or one image (tif, png, jpg; grey or
  RGB, any size); OUT gets `STEM.tif` per image (uint16, or uint32 past 65535 objects; Mutex
  Watershed and small-object merging as TEST says) and, with `--save-affinities`,
  `STEM_affinities.tif` (float32, C x H x W at the working resolution, DATA.scale). With
  `--format ome-zarr`, OUT gets `STEM.ome.zarr` per image instead (as a volume's, below).
- 3D: IN is `file.h5:DATASET`, `file.zarr/DATASET`, `file.n5/DATASET` or a TIFF stack; OUT is
  an OME-Zarr container (NGFF 0.5, `pea.ome`): the image `affinities` (c, z, y, x) and the
  label images `labels/segmentation/0` (`labels/segmentation_METHOD/0` for further
  partitioners) and, blockwise, `labels/fragments/0`, scaled by `--voxel-size`, chunked by
  `--block`. Blockwise (`pea.blockwise`) on a local dask cluster of `--workers` processes or on
  the cluster at `--scheduler`; `--whole` segments the volume in memory as
  `scripts_ac3ac4/inference.py`.

The network, its input normalisation and offsets come from the checkpoint's stored config, or
from `--config` (needed for the authors' checkpoints, which carry none). Outputs are written to
temporary names and renamed when complete.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pea.config import Config, make_config, merge, yaml_load
from pea.config_checks import check_metrics
from pea.errors import PEAInputError
from pea.extras import require
from pea.inference_cli import add_partitioner_flag
from pea.io import atomic_write, one_line

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MAX_CHANNELS = 16  # images of their own channels: up to this many (planar or last)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint: the project's (config inside) or the authors'")
    p.add_argument("--input", required=True, help="2D: folder, glob or image; 3D: file.h5:DATASET, "
                                                  "file.zarr/DATASET, file.n5/DATASET or a TIFF stack")
    p.add_argument("--output", required=True, help="2D: a folder; 3D: an OME-Zarr container (OUT.zarr)")
    p.add_argument("--config", default=None, help="config name (cvppp, bbbc039v1, ac3ac4, ...) or a .yaml path; "
                                                  "default: the checkpoint's own")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: TRAIN.device)")
    add_partitioner_flag(p)
    p.add_argument("--small-objects", default=None, metavar="YAML",
                   help='merging passes: sizes "[5, 20]" (contact rule) or "[[5, 5], [20, 11]]" (window rule)')
    p.add_argument("--merge-rule", choices=["contact", "window"], default=None, help="small-object merging rule")
    p.add_argument("--save-affinities", action="store_true", help="2D: also write STEM_affinities.tif")
    p.add_argument("--format", choices=["tif", "ome-zarr"], default=None,
                   help="2D: tif (default) or ome-zarr (STEM.ome.zarr: affinities and labels); 3D: always ome-zarr")
    p.add_argument("--voxel-size", type=float, nargs="+", default=None, metavar="S",
                   help="OME-Zarr: pixel spacing per spatial axis, (Z) Y X (default 1)")
    p.add_argument("--whole", action="store_true", help="3D: segment the volume in memory, not blockwise")
    p.add_argument("--block", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="3D block and chunk size (default: 4 window strides per axis)")
    p.add_argument("--workers", type=int, default=None,
                   help="local dask workers (default: one per GPU, else cores // --threads; 0: in this process)")
    p.add_argument("--threads", type=int, default=None,
                   help="3D: threads per worker (default: cores // workers, so workers x threads = cores)")
    p.add_argument("--retries", type=int, default=2, help="3D: tries again of a failed block (default 2)")
    p.add_argument("--overwrite", action="store_true",
                   help="3D: start over in OUT instead of resuming the unfinished run there")
    p.add_argument("--scheduler", default=None, help="address of a dask.distributed scheduler to run on")
    p.add_argument("--tile", type=int, nargs=2, default=None, metavar=("Y", "X"),
                   help="2D: predict by tiles of Y x X pixels (with the halo the network needs), equal to the "
                        "whole image")


def run_config(ckpt: Mapping, args: argparse.Namespace) -> Config:
    """--config, else the checkpoint's stored config; then --set, --small-objects, --merge-rule."""
    from pea import settings
    from pea.scripts import parse_overrides

    cfg = settings.checkpoint_config(ckpt, args.config, args.model)
    over = parse_overrides(args.overrides)
    if args.small_objects is not None:
        over.setdefault("TEST", {})["small_objects"] = yaml_load(args.small_objects)
    if args.merge_rule is not None:
        over.setdefault("TEST", {})["merge_rule"] = args.merge_rule
    return check_metrics(make_config(merge(cfg.to_dict(), over, "--set"), "--set") if over else cfg)


def run(args: argparse.Namespace) -> int:
    from pea import settings
    from pea.checkpoint import load_checkpoint, model_from_checkpoint
    from pea.inference import select_device

    ckpt = load_checkpoint(args.model)
    cfg = run_config(ckpt, args)
    model, model_cfg = model_from_checkpoint(ckpt, "cpu", args.model)
    cfg.MODEL = model_cfg.MODEL
    offsets, _ = settings.offsets(cfg.DATA)
    is_3d = model.spatial_dims == 3
    if is_3d != (len(offsets[0]) == 3):
        raise PEAInputError(f"{args.model}: a {'3D' if is_3d else '2D'} network, but the config's offsets are "
                            f"{len(offsets[0])}D; give the matching --config")
    methods = args.partitioner or list(cfg.TEST.partitioners)
    check_output_format(args, 3 if is_3d else 2)
    # on a cluster (--scheduler) each blockwise worker chooses its own device (pea.blockwise)
    remote = is_3d and not args.whole and args.scheduler
    device = None if remote else select_device(args.device or cfg.TRAIN.device)
    if is_3d:
        return predict_volume_file(args, cfg, model.to(device) if args.whole else None, device, methods)
    return predict_images(args, cfg, model.to(device), device, methods)


def check_output_format(args: argparse.Namespace, dims: int) -> None:
    """--format and --voxel-size fit the network's dimensions."""
    if dims == 3 and args.format == "tif":
        raise PEAInputError("--format tif: volumes are written as OME-Zarr containers (--format ome-zarr)")
    voxel = args.voxel_size
    if voxel is not None and (len(voxel) != dims or min(voxel) <= 0):
        raise PEAInputError(f"--voxel-size {' '.join(map(str, voxel))}: give {dims} positive sizes "
                            f"({'Z Y X' if dims == 3 else 'Y X'})")


def write_ngff(out: Path, args: argparse.Namespace, dims: int, image_factor: Sequence[float] | None = None) -> None:
    """The finished container `out` made OME-Zarr (`pea.ome.to_ngff`): its segmentations (and
    fragments) as label images, pixels --voxel-size apart."""
    from pea.ome import is_ngff, to_ngff

    if is_ngff(out):  # a finished run found again
        return
    group = require("zarr").open_group(out, mode="r")
    fragments = ["fragments"] if any((Path(out) / p / "fragments").is_dir() for p in ("", "labels")) else []
    to_ngff(out, list(group.attrs["arrays"].values()) + fragments, args.voxel_size or [1.0] * dims, image_factor)


# -- 2D ------------------------------------------------------------------------------------
def image_files(spec: str) -> list[Path]:
    """The images a folder, a glob or a file names (tif, png, jpg), sorted; stems unique."""
    path = Path(spec)
    if path.is_dir():
        files = [f for f in path.iterdir() if not f.name.startswith(".")]
    elif glob.has_magic(spec):
        files = [Path(f) for f in glob.glob(spec)]
    elif path.is_file():
        files = [path]
    else:
        raise PEAInputError(f"{spec}: no such folder or file")
    files = sorted(f for f in files if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PEAInputError(f"{spec}: no images ({', '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise PEAInputError(f"{f} and {stems[f.stem]} would both be written as {f.stem}.tif")
        stems[f.stem] = f
    return files


def read_image(path: Path, channels: int | None, percentiles: Sequence[float] | None) -> np.ndarray:
    """An image file (tif, png, jpg) as `unit_image` makes it."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB") if img.mode in ("P", "PA", "CMYK", "YCbCr") else img)
    except Exception as err:  # any decoder failure is an unreadable image
        raise PEAInputError(f"{path}: cannot read image ({one_line(err)})") from None
    return unit_image(arr, channels, percentiles, str(path))


def unit_image(arr: np.ndarray, channels: int | None, percentiles: Sequence[float] | None = None,
               name: str = "image") -> np.ndarray:
    """A grey, RGB(A) or `channels`-channel image as (H, W, channels) float32 in [0, 1]:
    integers over their type's maximum (or `percentiles` mapped to 0 and 1), grey repeated to
    `channels`, RGB averaged to grey for one channel, alpha dropped, planar RGB (or planar
    `channels` channels) moved last; `channels` None keeps the image's own channels."""
    from pea.volumes import to_unit

    arr = np.squeeze(np.asarray(arr))
    own = {3, 4, channels} if channels else set(range(2, MAX_CHANNELS + 1))
    if arr.ndim == 3 and arr.shape[0] in own and arr.shape[-1] not in own:
        arr = np.moveaxis(arr, 0, -1)  # planar
    if arr.ndim == 3 and arr.shape[-1] in (2, 4) and arr.shape[-1] != channels:
        arr = arr[..., :-1]  # alpha
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in own | {1})):
        raise PEAInputError(f"{name}: expected a grey or RGB image" + (f" or {channels} channels" if channels else "")
                            + f", got shape {arr.shape}")
    image = to_unit(arr, name)
    if percentiles is not None:
        from pea.data.bbbc039 import percentile_normalize

        image = percentile_normalize(image, percentiles)
    image = image.reshape(image.shape[:2] + (-1,))
    if channels is None or image.shape[-1] == channels:
        return image
    if image.shape[-1] == 1:
        return np.repeat(image, channels, axis=-1)
    if channels == 1:
        return image.mean(axis=-1, keepdims=True)
    raise PEAInputError(f"{name}: {image.shape[-1]} channels, but the network takes {channels}")


def _write_tif(path: Path, array: np.ndarray, kind: str) -> None:
    """`array` as a TIFF whose description marks it as pea's `kind` (labels | affinities), for
    the napari plugin's reader."""
    import tifffile

    with atomic_write(path) as tmp:
        tifffile.imwrite(tmp, array, metadata={"pea": kind})


def _write_ome_zarr(path: Path, affs: np.ndarray, seg: np.ndarray, offsets, args, source: Path) -> None:
    """One image's affinities (at the working resolution) and labels as an OME-Zarr container."""
    from pea.volumes import atomic_directory

    with atomic_directory(path) as tmp:
        group = require("zarr").open_group(tmp, mode="w", zarr_format=3)
        group.create_array("affinities", data=affs.astype(np.float32))
        group.create_array("segmentation", data=seg)
        group.attrs.update({"offsets": [list(o) for o in offsets], "methods": ["mutex"],
                            "arrays": {"mutex": "segmentation"}, "input": str(source),
                            "checkpoint": os.path.abspath(args.model)})
        write_ngff(tmp, args, 2, [n / m for n, m in zip(seg.shape, affs.shape[1:])])


def label_dtype(n: int):
    return np.uint16 if n < 2 ** 16 else np.uint32


def predict_images(args, cfg: Config, model, device, methods: Sequence[str]) -> int:
    """Segment every image IN names into OUT (see the module docstring)."""
    from tqdm import tqdm

    from pea import settings
    from pea.data.common import Sample, rescale
    from pea.inference import segment_sample
    from pea.io import remove_stale

    files = image_files(args.input)
    offsets, _ = settings.offsets(cfg.DATA)
    seg_opts = image_segment_options(settings.segment_options(cfg.TEST, methods), bool(cfg.MODEL.fg_head),
                                     args.model)
    pred_opts = settings.predict_options(cfg)
    layout = _tile_layout(args, pred_opts.window, model, offsets, int(cfg.MODEL.in_channels), device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    percentiles = cfg.DATA.get("percentiles")
    for path in tqdm(files, desc="segmenting"):
        image = read_image(path, int(cfg.MODEL.in_channels), percentiles)
        work = rescale(image, float(cfg.DATA.scale), nearest=False)
        if layout:
            result = _segment_tiled(model, work, image.shape[:2], offsets, args.tile, layout, pred_opts, seg_opts,
                                    device, str(path))
        else:
            result = segment_sample(model, Sample(str(path), work, shape=image.shape[:2]), offsets, device=device,
                                    predict_options=pred_opts, segment_options=seg_opts)
        seg, affs = result["seg"]["mutex"], result["affs"]
        seg = seg.astype(label_dtype(int(seg.max())))
        if args.format == "ome-zarr":
            _write_ome_zarr(out / f"{path.stem}.ome.zarr", affs, seg, offsets, args, path)
            continue
        _write_tif(out / f"{path.stem}.tif", seg, "labels")
        if args.save_affinities:
            _write_tif(out / f"{path.stem}_affinities.tif", affs.astype(np.float32), "affinities")
    print(f"{len(files)} image(s) segmented into {out}")
    return 0


def image_segment_options(options, fg_head: bool, source: str):
    """`SegmentOptions` for images without ground truth: Mutex Watershed only, TEST.mask gt
    becomes none (with a notice), pred needs the network's foreground head."""
    graph = [m for m in options.methods if m != "mutex"]
    if graph:
        raise PEAInputError(f"--partitioner {graph[0]}: waterz and multicut partition volumes; 2D images take mutex")
    if options.mask == "gt":
        print("notice: TEST.mask 'gt' needs ground truth; segmenting without a mask", file=sys.stderr)
        options = replace(options, mask="none")
    if options.mask == "pred" and not fg_head:
        raise PEAInputError(f"{source}: TEST.mask 'pred' needs a foreground head, which this network lacks; "
                            f"add --set TEST.mask=none")
    return options


def _segment_tiled(model, image: np.ndarray, shape, offsets, tile, layout, pred_opts, seg_opts, device,
                   name: str) -> dict:
    """--tile: the image's affinities by tiles (`pea.tiles`), then the mask and the Mutex
    Watershed as `segment_sample` makes them (the padding cropped off first)."""
    from pea.inference import segment_predicted
    from pea.tiles import predict_image_tiled

    affs, fg = predict_image_tiled(model, image, offsets, tile=tile, layout=layout, padded_size=pred_opts.padded_size,
                                   pad_mode=pred_opts.pad_mode, normalize=pred_opts.normalize, device=device,
                                   amp=pred_opts.amp)
    return segment_predicted(affs, fg, offsets, seg_opts, methods=["mutex"], shape=shape, name=name)


def _tile_layout(args, window, model, offsets, in_channels: int, device):
    """--tile: the halo and alignment the network's tiles need (`pea.tiles`), else None."""
    if not args.tile:
        return None
    if min(args.tile) < 1:
        raise PEAInputError(f"--tile {args.tile[0]} {args.tile[1]}: sizes must be positive")
    if window:
        raise PEAInputError("--tile and TEST.window both cut the image; use one of them")
    from pea.tiles import tile_layout

    layout = tile_layout(model, offsets, in_channels, device)
    print(f"tiles of {args.tile[0]}x{args.tile[1]} (rounded up to multiples of {layout.align}) with a halo of "
          f"{layout.halo} pixels", file=sys.stderr)
    return layout


# -- 3D ------------------------------------------------------------------------------------
def default_block(test_cfg: Mapping, shape: Sequence[int]) -> tuple[int, ...]:
    """Four window strides per axis (at least one window), within the volume."""
    window, overlap = test_cfg["window"], test_cfg["overlap"] or [0] * len(shape)
    return tuple(min(int(n), max(int(w), 4 * max(1, int(w) - int(o)))) for n, w, o in zip(shape, window, overlap))


def predict_volume_file(args, cfg: Config, model, device, methods: Sequence[str]) -> int:
    """Segment the volume IN names into the zarr container OUT, blockwise or (--whole) in memory."""
    from pea.volumes import atomic_directory, open_volume

    with open_volume(args.input) as volume:
        shape = tuple(int(n) for n in volume.shape)
    if float(cfg.DATA.scale) != 1.0:
        raise PEAInputError(f"DATA.scale = {cfg.DATA.scale}: volumes are segmented at their own resolution (1.0)")
    if args.tile:
        raise PEAInputError("--tile cuts 2D images; a volume is cut into blocks (--block Z Y X)")
    for module in ["zarr"] + (["waterz"] if "waterz" in methods else []):  # before anything is written
        require(module)
    if args.whole:
        with atomic_directory(args.output) as tmp:
            found = _whole_volume(args, cfg, model, device, methods, tmp)
            write_ngff(tmp, args, 3)
    else:
        found = _blockwise(args, cfg, shape, methods)
        write_ngff(Path(args.output), args, 3)
    print(f"{args.output}: " + ", ".join(f"{m} {n} segments" for m, n in found.items()))
    return 0


def _blockwise(args, cfg: Config, shape: Sequence[int], methods: Sequence[str]) -> dict[str, int]:
    """The volume blockwise (`pea.blockwise`), resuming an unfinished run in OUT."""
    import torch

    from pea import settings
    from pea.blockrun import Executor, cluster_shape, dask_client
    from pea.blockwise import check_blockwise, segment_blockwise

    test = cfg.TEST
    check_blockwise(window=test.window, small_objects=test.small_objects, merge_rule=test.merge_rule)
    block = tuple(args.block) if args.block else default_block(test, shape)
    for flag, values, least in (("--block", block, 1), ("--threads", [args.threads], 1),
                                ("--workers", [args.workers], 0), ("--retries", [args.retries], 0)):
        if any(v is not None and v < least for v in values):
            raise PEAInputError(f"{flag} {' '.join(map(str, values))}: expected numbers >= {least}")
    device = args.device or cfg.TRAIN.device
    workers, threads = cluster_shape(args.workers, args.threads, 0 if device == "cpu" else torch.cuda.device_count())
    threads = 0 if args.scheduler and args.threads is None else threads  # a cluster's workers: as they are
    job = settings.blockwise_job(cfg, input=args.input, output=args.output, checkpoint=args.model, shape=shape,
                                 block=block, device=device, in_channels=int(cfg.MODEL.in_channels), threads=threads)
    where = f"{workers} worker(s) x {threads} thread(s)" if workers else "this process"
    print(f"{len(job.boxes)} block(s) of {block} on {args.scheduler or where}; windows evaluated per window of "
          f"the whole-volume grid: {job.grid.cost(block):.2f}", file=sys.stderr)
    with dask_client(workers, args.scheduler) as client:
        return segment_blockwise(job, methods, Executor(client, retries=args.retries),
                                 waterz_threshold=float(test.waterz_threshold), small_objects=test.small_objects or [],
                                 overwrite=args.overwrite)


def _whole_volume(args, cfg: Config, model, device, methods: Sequence[str], out: Path) -> dict[str, int]:
    """The volume in memory: `pea.inference.predict` and `segment`, written as a container."""
    zarr = require("zarr")

    from pea import settings
    from pea.blockwise import UnitChannels
    from pea.inference import predict, segment
    from pea.volumes import open_volume

    with open_volume(args.input) as volume:
        image = UnitChannels(volume, int(cfg.MODEL.in_channels), args.input)[(slice(None),) * 3]
    offsets, _ = settings.offsets(cfg.DATA)
    affs, _ = predict(model, image, offsets, device=device, **asdict(settings.predict_options(cfg)))
    segs = segment(affs, offsets, methods, **settings.segment_options(cfg.TEST).partition_args())
    group = zarr.open_group(out, mode="w", zarr_format=2)
    chunks = default_block(cfg.TEST, image.shape[:3]) if cfg.TEST.window else image.shape[:3]
    group.create_array("affinities", data=affs.astype(np.float32), chunks=(affs.shape[0],) + tuple(chunks))
    names = {m: "segmentation" if i == 0 else f"segmentation_{m}" for i, m in enumerate(methods)}
    for method, seg in segs.items():
        dtype = np.uint32 if seg.max() < 2 ** 32 else np.uint64
        group.create_array(names[method], data=seg.astype(dtype), chunks=tuple(chunks))
    group.attrs.update({"offsets": [list(o) for o in offsets], "methods": list(methods), "arrays": names,
                        "input": args.input, "checkpoint": os.path.abspath(args.model)})
    return {m: int(s.max()) for m, s in segs.items()}
