"""Running block tasks so that a run survives a crash: per-block done markers, retries, a
fingerprint that says whether an output may be resumed, and the dask cluster the blocks run on.

A blockwise run works inside its output container (OUT.zarr) from the start. The container's
attributes hold the run's record (`pea_run`: the fingerprint, and `complete` once done); the
folder `OUT.zarr/pea_work/` holds the run's working state while it runs:

- `done/STAGE/INDEX.npz`: block INDEX finished stage STAGE; the file holds the block's result
  (fragment sizes, region-graph edges, ...). A task writes its outputs first (zarr writes each
  chunk to a temporary file and renames it) and its marker last, under a temporary name
  renamed into place, so a block counts as done only when all it wrote is complete; a block
  killed half-way is simply run again, and every task writes the same values when run again.
- anything else a stage keeps for a later one (working arrays, the agglomeration's tables).

When every stage is done the record says `complete` and `pea_work/` is removed. Rerunning
the same command skips the finished blocks of each stage; a different fingerprint (model,
input, settings) is refused unless the caller overwrites.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from pea.extras import require
from pea.errors import PEAInputError, PEARunError
from pea.io import TEMP_MARK, one_line
from pea.threads import cpu_cores

RUN_KEY = "pea_run"
WORK = "pea_work"
AXES = "zyx"


def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def value_digest(value) -> str:
    """sha256 of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def describe_box(box: Sequence[slice]) -> str:
    """'z 0:5, y 20:40, x 0:24'."""
    names = AXES[-len(box):] if len(box) <= len(AXES) else [f"axis{d}" for d in range(len(box))]
    return ", ".join(f"{a} {b.start}:{b.stop}" for a, b in zip(names, box))


def _is_container(path: Path) -> bool:
    return path.is_dir() and ((path / ".zgroup").is_file() or (path / "zarr.json").is_file())


def _empty(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@dataclass(frozen=True)
class RunState:
    """The bookkeeping of the run writing the container `output` (picklable: it travels to
    the dask workers, which write the markers)."""

    output: str

    @property
    def work(self) -> Path:
        return Path(self.output) / WORK

    def marker(self, stage: str, index: int) -> Path:
        return self.work / "done" / stage / f"{index}.npz"

    def done(self, stage: str) -> set[int]:
        folder = self.work / "done" / stage
        if not folder.is_dir():
            return set()
        return {int(p.stem) for p in folder.glob("*.npz") if p.stem.isdigit()}

    def save(self, path: Path, arrays: Mapping[str, np.ndarray], compress: bool = False) -> None:
        """`arrays` as an .npz file at `path`, written under a temporary name and renamed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        (np.savez_compressed if compress else np.savez)(buffer, **arrays)
        tmp = path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}{path.suffix}")
        try:
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    def record(self) -> dict | None:
        """The run record in the container's attributes; None if `output` holds none."""
        if not _is_container(Path(self.output)):
            return None
        zarr = require("zarr")

        return zarr.open_group(self.output, mode="r").attrs.asdict().get(RUN_KEY)

    def start(self, fingerprint: Mapping[str, str], overwrite: bool,
              create: Callable[[str], None]) -> dict | None:
        """Open the run: a new container (`create(path)` makes its arrays; the container
        appears whole, by a rename), or the unfinished run of the same fingerprint to resume.
        Returns the record of a complete run of the same fingerprint (nothing to do), else None.
        Refuses (PEAInputError) to resume another fingerprint, or to replace what is not a
        run's container, unless `overwrite` (which starts over)."""
        path = Path(self.output)
        record = self.record()
        if path.exists() and not overwrite and not _empty(path):
            if record is None:
                raise PEAInputError(f"{path}: exists and holds no pea predict run to resume; "
                                    f"add --overwrite to replace it")
            changed = [k for k in sorted(set(fingerprint) | set(record["fingerprint"]))
                       if fingerprint.get(k) != record["fingerprint"].get(k)]
            if changed:
                raise PEAInputError(f"{path}: holds a run of another {', '.join(changed)}; rerun the same "
                                    f"command to resume it, or add --overwrite to start over")
            return record if record.get("complete") else None
        if path.exists() and not (_is_container(path) or _empty(path)):
            raise PEAInputError(f"{path}: not a zarr container; not replacing it")
        from pea.volumes import atomic_directory

        with atomic_directory(path) as tmp:
            create(str(tmp))
            zarr = require("zarr")

            zarr.open_group(str(tmp), mode="r+").attrs[RUN_KEY] = {"fingerprint": dict(fingerprint),
                                                                   "complete": False}
        return None

    def finish(self, attrs: Mapping, found: Mapping[str, int]) -> None:
        """Write the container's attributes, mark the run complete, remove the working state."""
        zarr = require("zarr")

        group = zarr.open_group(self.output, mode="r+")
        record = dict(group.attrs[RUN_KEY], complete=True, found=dict(found))
        group.attrs.update({**attrs, RUN_KEY: record})
        shutil.rmtree(self.work, ignore_errors=True)
        for partial_write in Path(self.output).rglob("*.partial"):  # chunks of killed writes
            partial_write.unlink(missing_ok=True)


def run_block(fn: Callable, state: RunState, stage: str, job, index: int, **shared) -> dict:
    """One block's task: `fn(job, index, **shared)`, then its done marker (with the result)."""
    result = fn(job, index, **shared)
    state.save(state.marker(stage, index), result)
    return result


class Executor:
    """Runs a stage's block tasks: in this process (`client` None) or on dask; each block
    is tried `retries` + 1 times."""

    def __init__(self, client=None, progress: bool = True, retries: int = 2):
        self.client, self.progress, self.retries = client, progress, retries

    def run(self, stage: str, fn: Callable, job, state: RunState, **shared) -> list[dict]:
        """Every block's result of `stage`: the finished blocks' from their markers, the
        others computed (and marked). A block that fails every try ends the run with a
        PEARunError naming it, once the stage's other blocks are done."""
        boxes = job.boxes
        done = state.done(stage)
        todo = [i for i in range(len(boxes)) if i not in done]
        if done:
            print(f"{stage}: {len(done)} of {len(boxes)} block(s) finished before, skipping them", file=sys.stderr)
        task = partial(run_block, fn, state, stage, job)
        start = time.perf_counter()
        results, failed = (self._here if self.client is None else self._dask)(task, todo, stage, shared)
        print(f"{stage}: {len(todo) - len(failed)} block(s) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if failed:
            index, err = min(failed.items())
            more = f"; {len(failed) - 1} other block(s) failed too" if len(failed) > 1 else ""
            finished = sum(len(state.done(s)) for s in _stages(state))
            raise PEARunError(f"block {index} ({describe_box(boxes[index])}) failed in stage {stage} "
                              f"{self.retries + 1} time(s): {type(err).__name__}: {one_line(err)}{more}; "
                              f"{finished} finished block task(s) are kept, rerun the same command to resume")
        return [results[i] if i in results else state.load(state.marker(stage, i)) for i in range(len(boxes))]

    def _here(self, task: Callable, todo: list[int], stage: str, shared: Mapping) -> tuple[dict, dict]:
        results, failed = {}, {}
        for i in tqdm(todo, desc=stage, disable=not self.progress):
            for attempt in range(self.retries + 1):
                try:
                    results[i] = task(i, **shared)
                    failed.pop(i, None)
                    break
                except PEAInputError:  # bad input or a missing extra: no retry makes it right
                    raise
                except Exception as err:  # any other failure of a block is retried, then reported
                    failed[i] = err
                    if attempt < self.retries:
                        print(f"{stage}: block {i} failed ({type(err).__name__}: {one_line(err)}), retrying",
                              file=sys.stderr)
        return results, failed

    def _dask(self, task: Callable, todo: list[int], stage: str, shared: Mapping) -> tuple[dict, dict]:
        as_completed = require("distributed").as_completed

        shared = {k: self.client.scatter([v], broadcast=True)[0] for k, v in shared.items()}
        futures = self.client.map(task, todo, pure=False, retries=self.retries, **shared)
        index = {f.key: i for f, i in zip(futures, todo)}
        results, failed = {}, {}
        for future in tqdm(as_completed(futures), total=len(futures), desc=stage, disable=not self.progress):
            try:
                results[index[future.key]] = future.result()
            except PEAInputError:  # bad input or a missing extra: one line, exit 2
                raise
            except Exception as err:  # the task's error after its retries, or a lost worker
                failed[index[future.key]] = err
        return results, failed


def _stages(state: RunState) -> list[str]:
    folder = state.work / "done"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def cluster_shape(workers: int | None, threads: int | None, gpus: int = 0,
                  cores: int | None = None) -> tuple[int, int]:
    """Local dask workers and threads per worker so that workers x threads = the cores: by
    default one worker per GPU, else one per core with one thread each; a given `workers`
    gets cores // workers threads, given `threads` cores // threads workers. `workers` 0
    runs the blocks in this process, with `threads` threads or (0) as many as it has."""
    cores = cores or cpu_cores()
    if workers is None:
        workers = gpus if gpus else max(1, cores // (threads or 1))
    if threads is None:
        threads = max(1, cores // workers) if workers else 0
    return workers, threads


@contextmanager
def dask_client(workers: int, scheduler: str | None = None, processes: bool = True) -> Iterator:
    """A dask.distributed client: of the cluster at `scheduler`, else of a local cluster of
    `workers` processes (or threads of this process) running one block each at a time; None
    (this process, no dask) when `workers` is 0."""
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
