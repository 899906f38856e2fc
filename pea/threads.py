"""CPU threads: how many intra-op threads PyTorch (and OpenCV) use in the main process and in
the DataLoader workers. The network gets every core by default: a DataLoader worker (one
thread) spends most of its time waiting for the next batch to be asked for, so reserving it a
core left that core idle (the AC3/AC4 demo ran at a load of 1.0 on 2 cores)."""
from __future__ import annotations

import os


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Every core this process may run on."""
    return cpu_cores()


def configure_threads(threads: int | None, num_workers: int = 0) -> str:
    """Set the main process's intra-op threads: `threads`, else what OMP_NUM_THREADS says,
    else `default_threads`; return a one-line note of the choice."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(default_threads())
    n = torch.get_num_threads()
    workers = f" + 1 in each of {num_workers} DataLoader workers" if num_workers else ""
    return f"threads: {n} in the main process{workers} ({cpu_cores()} cores)"


def worker_init(worker_id: int) -> None:
    """DataLoader workers: one thread each for PyTorch and OpenCV."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
