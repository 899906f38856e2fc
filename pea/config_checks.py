"""Checks of a config against the layers above `pea.config`: the metrics it names are
known to `pea.metrics`, and the score that selects the best checkpoint is one of those reported.
`pea.config` checks each key's type and range when a config is read; the commands and entry
points call these once they hold the config they will run with.
"""
from __future__ import annotations

from typing import Mapping

from pea.config import reported_metrics
from pea.data import get_reader
from pea.errors import PEAInputError
from pea.metrics import select_metrics


def check_metrics(cfg: Mapping, source: str = "config") -> Mapping:
    """TEST.metrics are known selectors; TRAIN.select_metric is one of the scores reported.
    Returns `cfg`; a failure is a one-line PEAInputError naming the key."""
    try:
        select_metrics(cfg["TEST"]["metrics"] or [])
    except PEAInputError as err:
        raise PEAInputError(f"{source}: TEST.metrics: {err}") from None
    metric, dataset = cfg["TRAIN"]["select_metric"], cfg["DATA"]["dataset"]
    if metric is not None and dataset is not None:
        reported = select_metrics(reported_metrics(cfg, get_reader(dataset)))
        if metric not in reported:
            raise PEAInputError(f"{source}: TRAIN.select_metric = {metric!r}: expected one of {', '.join(reported)}")
    return cfg
