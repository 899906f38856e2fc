"""One look-alike sample in memory, (image, labels): a plant (CVPPP), a field of nuclei
(BBBC039V1) or an EM stack (AC3/AC4). The napari plugin's sample data; `pea export`'s test
input when none is given (`sample_for` picks one by the network's dimensions and channels)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def plant(shape: Sequence[int] = (256, 256), seed: int = 0, leaves: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A leaf rosette: RGB uint8 (H, W, 3) and leaf ids (H, W)."""
    from pea.synth.cvppp import make_plant

    return make_plant(np.random.default_rng(seed), int(shape[0]), int(shape[1]), leaves)


def nuclei(shape: Sequence[int] = (256, 256), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence field of nuclei: uint16 (H, W) and nucleus ids (H, W)."""
    from pea.synth.bbbc039 import make_nuclei_image

    return make_nuclei_image(np.random.default_rng(seed), int(shape[0]), int(shape[1]))


def em_volume(shape: Sequence[int] = (16, 128, 128), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An anisotropic EM stack of neurites: uint8 (Z, Y, X) and neurite ids (Z, Y, X)."""
    from pea.synth.em import make_em_volume

    return make_em_volume(np.random.default_rng(seed), tuple(int(s) for s in shape))


SAMPLES = {"plant": plant, "nuclei": nuclei, "em_volume": em_volume}


def sample_for(spatial_dims: int, channels: int, shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """An image of `shape` for a network of `spatial_dims` and `channels` input channels: an
    EM stack in 3D, a plant for colour (3-channel) 2D networks, nuclei for the others."""
    if spatial_dims == 3:
        return em_volume(shape, seed)[0]
    return (plant if channels == 3 else nuclei)(shape, seed)[0]
