"""CPU threads: how many intra-op threads PyTorch (and OpenCV) use in the main process and in
the DataLoader workers, so that workers and the network do not fight over the cores."""
from __future__ import annotations

import os


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(num_workers: int) -> int:
    """The cores left over by the DataLoader workers (one core each), at least one."""
    return max(1, cpu_cores() - num_workers)


def configure_threads(threads: int | None, num_workers: int = 0) -> str:
    """Set the main process's intra-op threads: `threads`, else what OMP_NUM_THREADS says,
    else `default_threads`; return a one-line note of the choice."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(default_threads(num_workers))
    n = torch.get_num_threads()
    workers = f" + 1 in each of {num_workers} DataLoader workers" if num_workers else ""
    return f"threads: {n} in the main process{workers} ({cpu_cores()} cores)"


def worker_init(worker_id: int) -> None:
    """DataLoader workers: one thread each for PyTorch and OpenCV."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
