"""The loss composition (SCM + CCM + EPM, the offsets at each pyramid level) against the
straightforward NumPy reference of tests/reference.py."""
import numpy as np
import pytest
import torch

from pea.affinity import EM_OFFSETS, offsets_from_shifts
from pea.config import make_config
from pea.losses import PEALoss
from reference import level_loss, nearest


def _blobs(rng, batch, shape, ids=4):
    """Blocky labels with background (0) and a few objects."""
    coarse = rng.integers(0, ids, size=(batch,) + tuple(max(1, s // 4) for s in shape))
    lab = coarse
    for axis, s in enumerate(shape):
        lab = np.repeat(lab, -(-s // coarse.shape[axis + 1]), axis=axis + 1)
    return lab[(slice(None),) + tuple(slice(0, s) for s in shape)]


def _pyramid(rng, batch, shape, dim=6, inplane_only=False):
    """Random embeddings at full resolution and at four lower levels (in-plane halving)."""
    levels = []
    for k in range(5):
        if inplane_only:
            size = shape[:-2] + tuple(s >> k for s in shape[-2:])
        else:
            size = tuple(s >> k for s in shape)
        levels.append(rng.normal(size=(batch, dim) + size))
    return levels


CASES = {
    "2d": dict(shape=(32, 48), offsets=offsets_from_shifts([1, 3, 5, 9, 27]), group=2, epm=[4, 3, 2, 1],
               background="same", inplane=False),
    "2d-8": dict(shape=(32, 32), offsets=offsets_from_shifts([1, 3, 5], neighbor=8), group=4, epm=[3, 2, 1, 1],
                 background="same", inplane=False),
    "3d": dict(shape=(4, 32, 32), offsets=EM_OFFSETS, group=3, epm=[3, 2, 1, 1], background="none", inplane=True),
}


@pytest.mark.parametrize("case", CASES)
def test_loss_composition_matches_reference(case):
    c = CASES[case]
    rng = np.random.default_rng(7)
    labels = _blobs(rng, 2, c["shape"])
    emb = _pyramid(rng, 2, c["shape"], inplane_only=c["inplane"])
    emb2 = _pyramid(rng, 2, c["shape"], inplane_only=c["inplane"])
    weights = {"scm_weight": 1.5, "ccm_weight": 0.7, "epm_weight": 2.0}
    cfg = make_config({"LOSS": {"epm_groups": c["epm"], "background": c["background"], **weights}}).LOSS
    loss = PEALoss(cfg, c["offsets"], c["group"])
    as_torch = lambda levels: {"embeddings": [torch.from_numpy(e).float() for e in levels],  # noqa: E731
                               "foreground": None}
    total, parts = loss(as_torch(emb), torch.from_numpy(labels), as_torch(emb2))

    bg = c["background"]
    scm = level_loss(emb[0], labels, c["offsets"], background=bg)
    ccm = level_loss(emb[0], labels, c["offsets"], other=emb2[0], background=bg)
    epm = 0.0
    for level, groups in zip(emb[1:], c["epm"]):
        # level k: the first `groups` shift groups, on nearest-downsampled labels
        offsets = c["offsets"][: groups * c["group"]]
        epm += level_loss(level, nearest(labels, level.shape[2:]), offsets, background=bg)
    expected = {"scm": 1.5 * scm, "ccm": 0.7 * ccm, "epm": 2.0 * epm}
    assert parts == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(sum(expected.values()), rel=1e-5)


def test_level_offsets_are_the_nearest_groups():
    cfg = make_config({"LOSS": {"epm_groups": [4, 3, 2, 1]}}).LOSS
    offsets = offsets_from_shifts([1, 3, 5, 9, 27])
    levels = PEALoss(cfg, offsets, 2).level_offsets()
    assert levels == [offsets[:8], offsets[:6], offsets[:4], offsets[:2]]
    assert levels[-1] == [(-1, 0), (0, -1)]


def test_switched_off_terms_are_absent():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(_blobs(rng, 1, (16, 16)))
    out = {"embeddings": [torch.from_numpy(e).float() for e in _pyramid(rng, 1, (16, 16))], "foreground": None}
    cfg = make_config({"LOSS": {"ccm": False, "epm": False}}).LOSS
    _, parts = PEALoss(cfg, offsets_from_shifts([1, 3]), 2)(out, labels, out)
    assert set(parts) == {"scm"}
