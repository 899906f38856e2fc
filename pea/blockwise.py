"""Blockwise 3D segmentation: memory set by the block, not the volume; blocks run in this
process or on a dask.distributed cluster (a local one, or one joined by its address); a run
killed part-way resumes where it stopped (`pea.blockrun`).

The volume is cut into blocks that are also the chunks of the output zarr container, so every
task writes whole chunks of its own. Stages, each over every block (a block's completion of a
stage is recorded with its result, see `pea.blockrun`):

1. `affinities` (`predict_block`): the affinities of the block from exactly the windows of
   the whole-volume window grid that touch it (`pea.windows.WindowGrid.blend`: the input is
   read once per block, with the context those windows need, reflect padding included), so
   they equal the whole-volume affinities; written to `affinities`.
2. `fragments` (`fragment_block`, for waterz and lmc): the block's fragments (`fragments`:
   `project` = `fragments_3d`, `official` = the paper code's per-section `maxima_fragments`),
   with ids unique without coordination (block number * (block voxels + 1) + local id), in
   a working array. They end at block faces (the agglomeration joins them again).
   `mutex` (`mutex_block`, for the Mutex Watershed): the block's Mutex Watershed segments,
   computed with a halo (`pea.stitch`).
3. `graph` (`graph_block`): the region graph's edges and their affinity statistics for the
   voxel pairs whose first voxel lies in the block (fragments read with a halo of the
   longest offset); for the Mutex Watershed also the overlaps of the block's grown segments
   with its neighbours' (`pea.stitch.overlaps`).
4. on the client: the graphs summed into one (`pea.regiongraph.merge_edges`), agglomerated
   globally: waterz's mean-affinity merging (`waterz`) and elf's multicut (`lmc`) on the same
   graph, the Mutex Watershed's fragments stitched (`pea.stitch.stitch`); then small objects
   merged by contact (`small_objects`, contact rule). The tables are kept for a resume.
5. `labels` (`write_labels`): fragments relabelled 1..N and each segmentation written.

For the same fragments the waterz and lmc segmentations equal the whole-volume ones
(`waterz_segment`, `multicut_segment`), since the merged graph is the whole volume's RAG with
the same edge statistics. The Mutex Watershed differs from the whole-volume one where the
grown blocks decide differently near their faces (docs/blockwise.md gives the difference).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Mapping, Sequence

import numpy as np
from skimage.segmentation import relabel_sequential

from pea.affinity import Offset
from pea.blockrun import Executor, RunState, file_digest, value_digest
from pea.extras import require
from pea.errors import PEAInputError
from pea.regiongraph import (ALL_COUNT, ALL_SUM, NN_COUNT, NN_SUM, edge_statistics, face_edges,
                             mean_affinity_agglomeration, merge_edges, merge_small_segments, multicut_labels)
from pea.stitch import block_boxes, block_mutex, default_halo, mutex_box, overlaps, stitch
from pea.volumes import open_volume, to_unit, volume_identity
from pea.windows import Box, WindowGrid

GRAPH_METHODS = ("waterz", "lmc")
SETTINGS = ("offsets", "window", "overlap", "blend", "context", "normalize", "fragments", "strides", "halo",
            "in_channels")


def _tuple(values) -> tuple | None:
    return None if values is None else tuple(tuple(v) if isinstance(v, (list, tuple)) else int(v) for v in values)


@dataclass(frozen=True)
class Job:
    """What every block task needs, as plain data (it travels to the dask workers)."""

    input: str  # the volume (pea.volumes spec)
    output: str  # the zarr container being written
    checkpoint: str
    shape: tuple[int, ...]
    block: tuple[int, ...]
    offsets: tuple[Offset, ...]
    window: tuple[int, ...]  # the sliding windows of the whole-volume grid
    overlap: tuple[int, ...] | None = None  # None: no overlap
    blend: str = "ramp"  # window blending: ramp | gaussian
    context: tuple[int, ...] | None = None  # gaussian: reflect padding of the volume
    normalize: str = "none"  # the network's input normalisation (pea.augment.normalize)
    fragments: str = "project"  # waterz/lmc fragments: project | official
    strides: tuple[int, ...] | None = None  # Mutex Watershed long-range strides (None: every edge)
    halo: tuple[int, ...] | None = None  # Mutex Watershed block halo (None: twice the offsets' reach)
    device: str = "auto"
    in_channels: int = 1
    threads: int = 0  # torch threads per task process (0: leave as is)

    def __post_init__(self):
        for name in ("shape", "block", "offsets", "window", "overlap", "context", "strides", "halo"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))

    @property
    def grid(self) -> WindowGrid:
        return WindowGrid.create(self.shape, self.offsets, self.window, self.overlap or [0] * len(self.shape),
                                 self.blend, self.context)

    @property
    def boxes(self) -> list[Box]:
        return block_boxes(self.shape, self.block)

    @property
    def stride(self) -> int:
        """Id space of one block's fragments in the working arrays before relabelling."""
        return int(np.prod(self.block)) + 1

    @property
    def mutex_halo(self) -> tuple[int, ...]:
        return self.halo or default_halo(self.offsets)


def fingerprint(job: Job, methods: Sequence[str], **agglomeration) -> dict[str, str]:
    """What a resumed run must share with the run it resumes: the checkpoint's bytes, the
    input volume (`pea.volumes.volume_identity`), the settings, the block and the partitioners."""
    settings = {name: getattr(job, name) for name in SETTINGS}
    return {"model": file_digest(job.checkpoint), "input": volume_identity(job.input),
            "config": value_digest({**settings, **agglomeration}), "block": "x".join(map(str, job.block)),
            "partitioners": ",".join(methods)}


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
        get_worker = require("distributed").get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else device


def _group(job: Job, mode: str = "r+"):
    zarr = require("zarr")

    return zarr.open_group(job.output, mode=mode)


def _work(job: Job, mode: str = "r+"):
    zarr = require("zarr")

    return zarr.open_group(str(RunState(job.output).work), mode=mode)


def block_fragments(affs: np.ndarray, mode: str) -> np.ndarray:
    """Fragments 1..n of a block's affinities: `official` (per-section maxima seeds, the paper
    code's waterz fragments) or `project` (`fragments_3d`)."""
    from pea.postprocess import fragments_3d, maxima_fragments

    frags = maxima_fragments(affs) if mode == "official" else fragments_3d(affs)
    return relabel_sequential(np.asarray(frags, dtype=np.uint64))[0]


def predict_block(job: Job, index: int) -> dict:
    """Stage `affinities` of block `index`."""
    from pea.inference import to_input

    box = job.boxes[index]
    model, device = _model(job)
    with open_volume(job.input) as volume:
        source = UnitChannels(volume, job.in_channels, job.input)
        affs = job.grid.blend(model, source, box, partial(to_input, mode=job.normalize, device=device))
    _group(job)["affinities"][(slice(None),) + box] = affs
    return {}


def _store_local(job: Job, kind: str, index: int, frags: np.ndarray) -> dict:
    """Block-local fragments 1..n as working ids (block * stride + local); their sizes."""
    base = np.uint64(index * job.stride)
    _work(job)[kind][job.boxes[index]] = np.where(frags > 0, frags + base, 0)
    return {"sizes": np.bincount(frags.ravel().astype(np.int64))[1:]}


def fragment_block(job: Job, index: int) -> dict:
    """Stage `fragments` of block `index`: the waterz/lmc fragments of its affinities."""
    affs = _group(job, "r")["affinities"][(slice(None),) + job.boxes[index]]
    return _store_local(job, "fragments", index, block_fragments(affs, job.fragments))


def _halo_file(job: Job, index: int):
    return RunState(job.output).work / "mutex_halo" / f"{index}.npz"


def mutex_block(job: Job, index: int) -> dict:
    """Stage `mutex` of block `index`: the Mutex Watershed of the block grown by its halo;
    the block's part is its fragments, the grown labels are kept for the stitching."""
    grown, inner = mutex_box(job.boxes[index], job.shape, job.mutex_halo, job.strides)
    affs = _group(job, "r")["affinities"][(slice(None),) + grown]
    frags, labels = block_mutex(affs, inner, job.offsets, job.strides)
    RunState(job.output).save(_halo_file(job, index), {"labels": labels.astype(np.uint32)}, compress=True)
    return _store_local(job, "mutex", index, frags)


def _compact(ids: np.ndarray, first_ids: np.ndarray, stride: int) -> np.ndarray:
    """Working fragment ids (block * stride + local) as global ids 1..N (0 stays 0)."""
    ids = np.asarray(ids, dtype=np.uint64)
    block, local = ids // np.uint64(stride), ids % np.uint64(stride)
    return np.where(local > 0, first_ids[block.astype(np.int64)].astype(np.uint64) + local, 0)


def halo_box(box: Box, offsets: Sequence[Offset], shape: Sequence[int]) -> tuple[Box, Box]:
    """The box grown by the offsets' reach (cut at the volume's border), and the box inside it."""
    lo = [max(0, b.start + min(0, *[o[d] for o in offsets])) for d, b in enumerate(box)]
    hi = [min(n, b.stop + max(0, *[o[d] for o in offsets])) for d, (b, n) in enumerate(zip(box, shape))]
    return (tuple(slice(a, z) for a, z in zip(lo, hi)),
            tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, lo)))


def block_edges(job: Job, kind: str, index: int, first_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge keys and statistics of the fragments `kind` for the pairs starting in the block."""
    box = job.boxes[index]
    read, inner = halo_box(box, job.offsets, job.shape)
    frags = _compact(_work(job, "r")[kind][read], first_ids, job.stride)
    return edge_statistics(frags, _group(job, "r")["affinities"][(slice(None),) + box], job.offsets, inner)


def graph_block(job: Job, index: int, first_ids: Mapping[str, np.ndarray]) -> dict:
    """Stage `graph` of block `index`: edges of each kind of fragments, and for the Mutex
    Watershed the overlaps of the block's grown segments with its neighbours' fragments."""
    out = {}
    for kind, first in first_ids.items():
        out[f"{kind}_keys"], out[f"{kind}_stats"] = block_edges(job, kind, index, first)
    if "mutex" in first_ids:
        grown, inner = mutex_box(job.boxes[index], job.shape, job.mutex_halo, job.strides)
        first = first_ids["mutex"]
        mine = RunState(job.output).load(_halo_file(job, index))["labels"].astype(np.uint64)
        mine = np.where(mine > 0, mine + np.uint64(first[index]), 0)
        theirs = _compact(_work(job, "r")["mutex"][grown], first, job.stride)
        out["pair_keys"], out["pair_counts"] = overlaps(mine, theirs, inner, [h // 2 for h in job.mutex_halo])
    return out


def write_labels(job: Job, index: int, first_ids: Mapping[str, np.ndarray],
                 tables: Mapping[str, tuple[str, np.ndarray]]) -> dict:
    """Stage `labels` of block `index`: the fragments as 1..N, and each segmentation (array
    name -> (kind of fragments, table of their segments))."""
    box = job.boxes[index]
    group, work = _group(job), _work(job, "r")
    frags = {kind: _compact(work[kind][box], first, job.stride).astype(np.int64) for kind, first in first_ids.items()}
    if "fragments" in frags:
        group["fragments"][box] = frags["fragments"]
    for name, (kind, table) in tables.items():
        group[name][box] = table[frags[kind]]
    return {}


def finish_labels(labels: np.ndarray, sizes: np.ndarray, uv: np.ndarray, stats: np.ndarray,
                  small_objects: Sequence[int] = ()) -> np.ndarray:
    """Segments 1..N of the nodes' `labels` (node 0, the missing fragment, stays 0), small
    objects merged by contact (passes of `small_objects` sizes) on the graph `uv`."""
    labels = np.asarray(labels, dtype=np.int64)
    if small_objects:
        return merge_small_segments(labels, sizes, uv.astype(np.int64), stats[:, NN_COUNT], list(small_objects))
    return relabel_sequential(labels)[0]


def agglomerate(n_nodes: int, uv: np.ndarray, stats: np.ndarray, sizes: np.ndarray, *, method: str,
                threshold: float = 0.5, fragments: str = "project", small_objects: Sequence[int] = ()) -> np.ndarray:
    """Each node's segment (0 for node 0, the missing fragment) on the merged graph: `method`
    waterz (mean-affinity merging up to `threshold`) or lmc (multicut; costs as `fragments`
    says: official = nearest offsets and boundary lengths, project = every offset), then
    small objects merged by contact (passes of `small_objects` sizes)."""
    if method == "waterz":
        labels = mean_affinity_agglomeration(n_nodes, uv, stats[:, NN_SUM], stats[:, NN_COUNT], float(threshold))
    elif fragments == "official":  # the paper code's costs: nearest offsets, boundary lengths
        labels = multicut_labels(n_nodes, uv, 1.0 - stats[:, NN_SUM] / stats[:, NN_COUNT], stats[:, NN_COUNT])
    else:
        labels = multicut_labels(n_nodes, uv, 1.0 - stats[:, ALL_SUM] / stats[:, ALL_COUNT], stats[:, ALL_COUNT])
    labels = np.asarray(labels, dtype=np.int64) + 1
    labels[0] = 0
    return finish_labels(labels, sizes, uv, stats, small_objects)


def check_blockwise(*, window: Sequence[int] | None, small_objects: Sequence = (), merge_rule: str = "contact") -> None:
    """Refuse what the blockwise run does not do, naming the way round: small objects merged
    by another rule than contact, no `window`."""
    if small_objects and merge_rule != "contact":
        raise PEAInputError(f"TEST.merge_rule {merge_rule!r}: blockwise merging of small objects "
                            f"takes the contact rule (--merge-rule contact), or add --whole")
    if not window:
        raise PEAInputError("TEST.window is not set: blockwise prediction slides windows; set it "
                            "(--set TEST.window=[Z,Y,X] --set TEST.overlap=[Z,Y,X]) or add --whole")


def _kinds(methods: Sequence[str]) -> list[str]:
    """The kinds of fragments the partitioners need: `fragments` (waterz, lmc), `mutex`."""
    graph = ["fragments"] if any(m in GRAPH_METHODS for m in methods) else []
    return graph + (["mutex"] if "mutex" in methods else [])


def create_arrays(job: Job, kinds: Sequence[str], path: str) -> None:
    """A new container at `path`: `affinities` (C, z, y, x) float32 (and `fragments` for
    waterz/lmc), chunked by the block, and the working arrays of each kind of fragments."""
    zarr = require("zarr")

    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("affinities", shape=(len(job.offsets),) + job.shape,
                       chunks=(len(job.offsets),) + job.block, dtype="float32", fill_value=0)
    if "fragments" in kinds:
        group.create_array("fragments", shape=job.shape, chunks=job.block, dtype=np.uint64, fill_value=0)
    work = zarr.open_group(os.path.join(path, RunState(path).work.name), mode="w", zarr_format=2)
    for kind in kinds:
        work.create_array(kind, shape=job.shape, chunks=job.block, dtype=np.uint64, fill_value=0)


def _tables(job: Job, state: RunState, methods: Sequence[str], names: Mapping[str, str],
            sizes: Mapping[str, list], first_ids: Mapping[str, np.ndarray], graphs: list[dict], *,
            waterz_threshold: float, small_objects: Sequence[int]) -> dict[str, np.ndarray]:
    """Array name -> each fragment's segment, for every partitioner; computed once and kept."""
    path = state.work / "tables.npz"
    if path.is_file():
        return state.load(path)
    tables = {}
    for kind, kind_sizes in sizes.items():
        node_sizes = np.r_[0, np.concatenate(kind_sizes)].astype(np.float64)
        n_nodes = node_sizes.size
        uv, stats = face_edges(*merge_edges([(g[f"{kind}_keys"], g[f"{kind}_stats"]) for g in graphs]))
        for method in [m for m in methods if _kinds([m]) == [kind]]:
            if method == "mutex":
                pair_keys, counts = merge_edges([(g["pair_keys"], g["pair_counts"][:, None]) for g in graphs])
                labels = stitch(n_nodes, pair_keys, counts[:, 0], first_ids[kind])
                table = finish_labels(labels, node_sizes, uv, stats, small_objects)
            else:
                table = agglomerate(n_nodes, uv, stats, node_sizes, method=method, threshold=waterz_threshold,
                                    fragments=job.fragments, small_objects=small_objects)
            tables[names[method]] = table
    state.save(path, tables)
    return tables


def segment_blockwise(job: Job, methods: Sequence[str], executor: Executor, *, waterz_threshold: float = 0.5,
                      small_objects: Sequence[int] = (), overwrite: bool = False) -> dict[str, int]:
    """Write affinities, fragments (for waterz/lmc) and one segmentation per method (arrays
    `segmentation` for the first, `segmentation_<method>` for the others) into `job.output`,
    resuming an unfinished run of the same fingerprint there (`overwrite`: start over);
    returns the number of segments per method. `waterz_threshold`: waterz's merge threshold;
    `small_objects`: sizes of the small-object merging passes (contact rule)."""
    names = {m: "segmentation" if i == 0 else f"segmentation_{m}" for i, m in enumerate(methods)}
    kinds = _kinds(methods)
    state = RunState(job.output)
    print_ = partial(print, file=sys.stderr)
    record = state.start(fingerprint(job, methods, waterz_threshold=float(waterz_threshold),
                                     small_objects=list(small_objects)), overwrite, partial(create_arrays, job, kinds))
    if record is not None:
        print_(f"{job.output}: this run is complete already, nothing to do")
        return dict(record["found"])
    executor.run("affinities", predict_block, job, state)
    stages = {"fragments": fragment_block, "mutex": mutex_block}
    sizes = {kind: [r["sizes"] for r in executor.run(kind, stages[kind], job, state)] for kind in kinds}
    first_ids = {kind: np.r_[0, np.cumsum([s.size for s in v])[:-1]].astype(np.int64) for kind, v in sizes.items()}
    graphs = executor.run("graph", graph_block, job, state, first_ids=first_ids)
    start = time.perf_counter()
    tables = _tables(job, state, methods, names, sizes, first_ids, graphs, waterz_threshold=waterz_threshold,
                     small_objects=small_objects)
    fragments = sum(sum(s.size for s in v) for v in sizes.values())
    print_(f"agglomeration ({', '.join(methods)}; {fragments} fragments): {time.perf_counter() - start:.1f} s")
    found = {m: int(tables[names[m]].max()) for m in methods}
    dtype = np.uint32 if max(found.values()) < 2 ** 32 else np.uint64
    group = _group(job)
    for name in tables:
        if name not in group:
            group.create_array(name, shape=job.shape, chunks=job.block, dtype=dtype, fill_value=0)
    kind_of = {names[m]: _kinds([m])[0] for m in methods}
    executor.run("labels", write_labels, job, state, first_ids=first_ids,
                 tables={name: (kind_of[name], table.astype(dtype)) for name, table in tables.items()})
    attrs = {"offsets": [list(o) for o in job.offsets], "methods": list(methods), "arrays": names,
             "input": job.input, "checkpoint": os.path.abspath(job.checkpoint), "block": list(job.block)}
    if "fragments" in sizes:
        attrs["fragments"] = int(sum(s.size for s in sizes["fragments"]))
    state.finish(attrs, found)
    return found
