"""Blockwise 3D segmentation: memory set by the block, not the volume; blocks run in this
process or on a dask.distributed cluster (a local one, or one joined by its address).

The volume is cut into blocks that are also the chunks of the output zarr container, so every
task writes whole chunks of its own. Four passes over the blocks:

1. `predict_block`: the affinities of the block from exactly the windows of the whole-volume
   window grid that touch it (`pea.windows.WindowGrid.blend`: the input is read once per
   block, with the context those windows need, reflect padding included), so they equal the
   whole-volume affinities; written to `affinities`. Then the block's fragments
   (TEST.fragments: `project` = `fragments_3d`, `official` = the paper code's per-section
   `maxima_fragments`), written to `fragments` with ids unique without coordination
   (block number * (block voxels + 1) + local id).
2. `block_edges`: the region graph's edges and their affinity statistics for the voxel pairs
   whose first voxel lies in the block (fragments read with a halo of the longest offset).
3. on the client: the graphs summed into one (`pea.regiongraph.merge_edges`), agglomerated
   globally: waterz's mean-affinity merging (`-waterz`) and elf's multicut (`-lmc`) on the
   same graph, then small objects merged by contact (TEST.small_objects, contact rule).
4. `write_labels`: fragments relabelled 1..N and each segmentation written block by block.

For the same fragments the segmentation equals the whole-volume one (`waterz_segment`,
`multicut_segment`), since the merged graph is the whole volume's RAG with the same edge
statistics. The fragments themselves differ from whole-volume fragments: a block's watershed
does not see past the block, so fragments end at block faces (the agglomeration joins them
again where the affinities say so).
"""
from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from pea import settings
from pea.affinity import Offset
from pea.errors import PEAInputError
from pea.extras import require
from pea.regiongraph import (ALL_COUNT, ALL_SUM, NN_COUNT, NN_SUM, edge_statistics, face_edges,
                             mean_affinity_agglomeration, merge_edges, merge_small_segments, multicut_labels)
from pea.volumes import open_volume, to_unit
from pea.windows import Box, WindowGrid

BLOCKWISE_METHODS = ("waterz", "lmc")


@dataclass(frozen=True)
class Job:
    """What every block task needs, as plain data (it travels to the dask workers)."""

    input: str  # the volume (pea.volumes spec)
    output: str  # the zarr container being written
    checkpoint: str
    cfg: Mapping  # the run's config (DATA, TEST, and the checkpoint's MODEL)
    shape: tuple[int, ...]
    block: tuple[int, ...]
    device: str = "auto"
    in_channels: int = 1
    threads: int = 0  # torch threads per task process (0: leave as is)
    offsets: tuple[Offset, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "offsets", tuple(settings.offsets(self.cfg["DATA"])[0]))

    @property
    def grid(self) -> WindowGrid:
        return settings.window_grid(self.shape, self.offsets, self.cfg["TEST"])

    @property
    def boxes(self) -> list[Box]:
        starts = itertools.product(*[range(0, n, b) for n, b in zip(self.shape, self.block)])
        return [tuple(slice(a, min(a + b, n)) for a, b, n in zip(s, self.block, self.shape)) for s in starts]

    @property
    def stride(self) -> int:
        """Id space of one block's fragments in the `fragments` array before relabelling."""
        return int(np.prod(self.block)) + 1


class UnitChannels:
    """A (z, y, x) volume seen as (z, y, x, C) float32 in [0, 1], converted where read."""

    def __init__(self, volume, channels: int, name: str):
        self.volume, self.channels, self.name = volume, channels, name
        self.shape = tuple(volume.shape) + (channels,)

    def __getitem__(self, box) -> np.ndarray:
        data = to_unit(self.volume[tuple(box)[:3]], self.name)[..., None]
        return np.repeat(data, self.channels, axis=-1) if self.channels > 1 else data


_MODELS: dict = {}


def _model(job: Job):
    """The network on this process's device, loaded once per process."""
    import torch

    from pea.checkpoint import load_checkpoint, model_from_checkpoint
    from pea.inference import select_device

    key = (job.checkpoint, job.device)
    if key not in _MODELS:
        if job.threads:
            torch.set_num_threads(job.threads)
        device = select_device(_worker_device(job.device))
        _MODELS[key] = (model_from_checkpoint(load_checkpoint(job.checkpoint), device, job.checkpoint)[0], device)
    return _MODELS[key]


def _worker_device(device: str) -> str:
    """With several GPUs, dask worker number k of a local cluster takes GPU k (mod count)."""
    import torch

    if device not in ("auto", "cuda") or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else device


def _group(job: Job, mode: str = "r+"):
    zarr = require("zarr")

    return zarr.open_group(job.output, mode=mode)


def block_fragments(affs: np.ndarray, mode: str) -> np.ndarray:
    """Fragments 1..n of a block's affinities: `official` (per-section maxima seeds, the paper
    code's waterz fragments) or `project` (`fragments_3d`)."""
    from pea.postprocess import fragments_3d, maxima_fragments

    frags = maxima_fragments(affs) if mode == "official" else fragments_3d(affs)
    return relabel_sequential(np.asarray(frags, dtype=np.uint64))[0]


def predict_block(job: Job, index: int) -> np.ndarray:
    """Pass 1 on block `index`: its affinities and fragments; returns the fragments' sizes."""
    from pea.inference import to_input

    box = job.boxes[index]
    model, device = _model(job)
    with open_volume(job.input) as volume:
        source = UnitChannels(volume, job.in_channels, job.input)
        affs = job.grid.blend(model, source, box,
                              partial(to_input, mode=job.cfg["DATA"]["normalize"], device=device))
    group = _group(job)
    group["affinities"][(slice(None),) + box] = affs
    frags = block_fragments(affs, job.cfg["TEST"]["fragments"])
    base = np.uint64(index * job.stride)
    group["fragments"][box] = np.where(frags > 0, frags + base, 0)
    return np.bincount(frags.ravel().astype(np.int64))[1:]


def _compact(ids: np.ndarray, first_ids: np.ndarray, stride: int) -> np.ndarray:
    """Block-local fragment ids (block * stride + local) as global ids 1..N (0 stays 0)."""
    ids = np.asarray(ids, dtype=np.uint64)
    block, local = ids // np.uint64(stride), ids % np.uint64(stride)
    return np.where(local > 0, first_ids[block.astype(np.int64)].astype(np.uint64) + local, 0)


def block_edges(job: Job, index: int, first_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2 on block `index`: edge keys and statistics of the pairs starting in the block."""
    box = job.boxes[index]
    read, inner = halo_box(box, job.offsets, job.shape)
    group = _group(job, "r")
    frags = _compact(group["fragments"][read], first_ids, job.stride)
    return edge_statistics(frags, group["affinities"][(slice(None),) + box], job.offsets, inner)


def halo_box(box: Box, offsets: Sequence[Offset], shape: Sequence[int]) -> tuple[Box, Box]:
    """The box grown by the offsets' reach (cut at the volume's border), and the box inside it."""
    lo = [max(0, b.start + min(0, *[o[d] for o in offsets])) for d, b in enumerate(box)]
    hi = [min(n, b.stop + max(0, *[o[d] for o in offsets])) for d, (b, n) in enumerate(zip(box, shape))]
    return (tuple(slice(a, z) for a, z in zip(lo, hi)),
            tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, lo)))


def write_labels(job: Job, index: int, first_ids: np.ndarray, luts: Mapping[str, np.ndarray]) -> None:
    """Pass 4 on block `index`: fragments as 1..N, and each segmentation (array name -> lut)."""
    box = job.boxes[index]
    group = _group(job)
    frags = _compact(group["fragments"][box], first_ids, job.stride)
    group["fragments"][box] = frags
    for name, lut in luts.items():
        group[name][box] = lut[frags.astype(np.int64)]


class Executor:
    """Runs a block task over all blocks: in this process (`client` None) or on dask."""

    def __init__(self, client=None, progress: bool = True):
        self.client, self.progress = client, progress

    def map(self, fn: Callable, job: Job, desc: str, **shared) -> list:
        n = len(job.boxes)
        if self.client is None:
            return [fn(job, i, **shared) for i in tqdm(range(n), desc=desc, disable=not self.progress)]
        as_completed = require("distributed").as_completed

        shared = {k: self.client.scatter([v], broadcast=True)[0] for k, v in shared.items()}
        futures = self.client.map(partial(fn, job), range(n), pure=False, **shared)
        for _ in tqdm(as_completed(futures), total=n, desc=desc, disable=not self.progress):
            pass
        return self.client.gather(futures)


@contextmanager
def dask_client(workers: int, scheduler: str | None = None, processes: bool = True) -> Iterator:
    """A dask.distributed client: of the cluster at `scheduler`, else of a local cluster of
    `workers` processes (or threads of this process) of one thread each; None (this process,
    no dask) when `workers` is 0."""
    if not scheduler and workers <= 0:
        yield None
        return
    distributed = require("distributed")
    Client, LocalCluster = distributed.Client, distributed.LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as err:
            raise PEAInputError(f"--scheduler {scheduler}: cannot reach the dask scheduler ({err})") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                      dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


def agglomerate(n_nodes: int, uv: np.ndarray, stats: np.ndarray, sizes: np.ndarray, test_cfg: Mapping,
                method: str) -> np.ndarray:
    """Each node's segment (0 for node 0, the missing fragment) by `method` on the merged graph,
    then small objects merged by contact (TEST.small_objects, contact rule)."""
    if method == "waterz":
        labels = mean_affinity_agglomeration(n_nodes, uv, stats[:, NN_SUM], stats[:, NN_COUNT],
                                             float(test_cfg["waterz_threshold"]))
    elif test_cfg["fragments"] == "official":  # the paper code's costs: nearest offsets, boundary lengths
        labels = multicut_labels(n_nodes, uv, 1.0 - stats[:, NN_SUM] / stats[:, NN_COUNT], stats[:, NN_COUNT])
    else:
        labels = multicut_labels(n_nodes, uv, 1.0 - stats[:, ALL_SUM] / stats[:, ALL_COUNT], stats[:, ALL_COUNT])
    labels = np.asarray(labels, dtype=np.int64) + 1
    labels[0] = 0
    passes = list(test_cfg["small_objects"] or [])
    if passes:
        return merge_small_segments(labels, sizes, uv.astype(np.int64), stats[:, NN_COUNT], passes)
    return relabel_sequential(labels)[0]


def check_blockwise(test_cfg: Mapping, methods: Sequence[str]) -> None:
    """Refuse what the blockwise run does not do, naming the way round."""
    other = [m for m in methods if m not in BLOCKWISE_METHODS]
    if other:
        raise PEAInputError(f"--{other[0]} is not blockwise (blockwise: --waterz, --lmc); "
                            f"add --whole to segment the volume in memory")
    if test_cfg["small_objects"] and test_cfg["merge_rule"] != "contact":
        raise PEAInputError(f"TEST.merge_rule {test_cfg['merge_rule']!r}: blockwise merging of small objects "
                            f"takes the contact rule (--merge-rule contact), or add --whole")
    if not test_cfg["window"]:
        raise PEAInputError("TEST.window is not set: blockwise prediction slides windows; set it "
                            "(--set TEST.window=[Z,Y,X] --set TEST.overlap=[Z,Y,X]) or add --whole")


def create_arrays(job: Job, names: Sequence[str] = (), dtype=np.uint64, mode: str = "w") -> None:
    """Arrays of the output container, chunked by the block: `affinities` (C, z, y, x) float32
    and `fragments` (mode "w", a new container), or the (z, y, x) label arrays `names`."""
    zarr = require("zarr")

    group = zarr.open_group(job.output, mode=mode, zarr_format=2)
    if mode == "w":
        group.create_array("affinities", shape=(len(job.offsets),) + job.shape,
                           chunks=(len(job.offsets),) + job.block, dtype="float32", fill_value=0)
        names = ("fragments",) + tuple(names)
    for name in names:
        group.create_array(name, shape=job.shape, chunks=job.block, dtype=dtype, fill_value=0)


def segment_blockwise(job: Job, methods: Sequence[str], executor: Executor) -> dict[str, int]:
    """Write affinities, fragments and one segmentation per method (arrays `segmentation`
    for the first, `segmentation_<method>` for the others) into `job.output`; returns the
    number of segments per method."""
    check_blockwise(job.cfg["TEST"], methods)
    names = {m: "segmentation" if i == 0 else f"segmentation_{m}" for i, m in enumerate(methods)}
    create_arrays(job)
    sizes = executor.map(predict_block, job, "affinities + fragments")
    counts = np.array([s.size for s in sizes])
    first_ids = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    n_nodes = int(counts.sum()) + 1
    node_sizes = np.r_[0, np.concatenate(sizes)].astype(np.float64)
    keys, stats = merge_edges(executor.map(block_edges, job, "region graph", first_ids=first_ids))
    uv, stats = face_edges(keys, stats)
    luts = {names[m]: agglomerate(n_nodes, uv, stats, node_sizes, job.cfg["TEST"], m) for m in methods}
    found = {m: int(luts[names[m]].max()) for m in methods}
    dtype = np.uint32 if max(found.values()) < 2 ** 32 else np.uint64
    create_arrays(job, list(luts), dtype, mode="r+")
    luts = {name: lut.astype(dtype) for name, lut in luts.items()}
    executor.map(write_labels, job, "labels", first_ids=first_ids, luts=luts)
    group = _group(job)
    group.attrs.update({"offsets": [list(o) for o in job.offsets], "methods": list(methods),
                        "arrays": names, "fragments": int(n_nodes - 1), "input": job.input,
                        "checkpoint": os.path.abspath(job.checkpoint), "block": list(job.block)})
    return found
