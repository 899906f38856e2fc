"""The loss composition (SCM + CCM + EPM, the offsets at each pyramid level, the loss scale
and the class-weight rule) against the straightforward NumPy reference of tests/reference.py,
a hand-computed tiny batch, and the foreground head's class weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pea.affinity import EM_OFFSETS, offsets_from_shifts
from pea.settings import offsets as resolve_offsets
from pea import settings
from pea.config import load_config, make_config, shipped_config
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
    # the authors' objectives: 2D H x the per-pixel mean with pairs leaving the image as ones;
    # 3D each channel over its pairs inside, leaving pairs as zeros (on the pyramid levels as
    # the label's foreground), the 3 nearest offsets at every level
    "2d-official": dict(shape=(32, 48), offsets=offsets_from_shifts([1, 3, 5, 9, 27]), group=2, epm=[4, 3, 2, 1],
                        background="same", inplane=False, normalize="width", outside="one"),
    "3d-official": dict(shape=(4, 32, 32), offsets=EM_OFFSETS, group=3, epm=[1, 1, 1, 1], background="none",
                        inplane=True, normalize="pairs", outside="zero", epm_outside="foreground"),
    "3d-mean": dict(shape=(4, 32, 32), offsets=EM_OFFSETS, group=3, epm=[1, 1, 1, 1], background="none",
                    inplane=True, normalize="mean", outside="zero"),
}
OUTSIDE = {"ignore": None, "one": 1, "zero": 0, "foreground": "foreground"}


@pytest.mark.parametrize("case", CASES)
def test_loss_composition_matches_reference(case):
    c = CASES[case]
    rng = np.random.default_rng(7)
    labels = _blobs(rng, 2, c["shape"])
    emb = _pyramid(rng, 2, c["shape"], inplane_only=c["inplane"])
    emb2 = _pyramid(rng, 2, c["shape"], inplane_only=c["inplane"])
    weights = {"scm_weight": 1.5, "ccm_weight": 0.7, "epm_weight": 2.0}
    norm, outside = c.get("normalize", "mean"), c.get("outside", "ignore")
    epm_outside = c.get("epm_outside", outside)
    loss = PEALoss(c["offsets"], c["group"], epm_groups=c["epm"], background=c["background"], normalize=norm,
                   outside_pairs=outside, epm_outside_pairs=c.get("epm_outside"), **weights)
    as_torch = lambda levels: {"embeddings": [torch.from_numpy(e).float() for e in levels],  # noqa: E731
                               "foreground": None}
    total, parts = loss(as_torch(emb), torch.from_numpy(labels), as_torch(emb2))
    parts = {k: float(v) for k, v in parts.items()}

    ref = dict(background=c["background"], normalize=norm, outside=OUTSIDE[outside])
    scm = level_loss(emb[0], labels, c["offsets"], **ref)
    ccm = level_loss(emb[0], labels, c["offsets"], other=emb2[0], **ref)
    epm = 0.0
    for level, groups in zip(emb[1:], c["epm"]):
        # level k: the first `groups` shift groups, on nearest-downsampled labels
        offsets = c["offsets"][: groups * c["group"]]
        epm += level_loss(level, nearest(labels, level.shape[2:]), offsets, **dict(ref, outside=OUTSIDE[epm_outside]))
    expected = {"scm": 1.5 * scm, "ccm": 0.7 * ccm, "epm": 2.0 * epm}
    assert parts == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(sum(expected.values()), rel=1e-5)


def _tiny_case(normalize, outside):
    """Labels [[1, 1, 2, 2], [0, 0, 2, 2]] (B = 1, H = 2, W = 4), offsets (-1, 0) and (0, -1),
    one embedding everywhere (every affinity 1, so only target-0 pairs err, by 1 each), and a
    1/2 level of one row [1, 2]."""
    labels = torch.tensor([[[1, 1, 2, 2], [0, 0, 2, 2]]])
    full, half = torch.ones(1, 3, 2, 4), torch.ones(1, 3, 1, 2)
    out = {"embeddings": [full, half], "foreground": None}
    loss = PEALoss([(-1, 0), (0, -1)], 2, epm_groups=[1], normalize=normalize, outside_pairs=outside)
    return {k: float(v) for k, v in loss(out, labels, out)[1].items()}


@pytest.mark.parametrize("normalize, outside, scm, epm", [
    # Background (0, 0) in the second row. (-1, 0): 4 pairs inside, 2 ones (column 2, 3) and 2
    # zeros (label 1 over background); 4 leave the image (the first row: labels 1, 1, 2, 2).
    # (0, -1): 6 pairs inside, 4 ones ((1, 1), (2, 2) twice, (0, 0)) and 2 zeros; 2 leave (the
    # first column: labels 1, 0).
    # Leaving pairs as ones: (-1, 0) f = 6/8, zeros weigh 3: 6; (0, -1) f = 6/8: 6. Sum 12,
    # / (B x W = 4) = 3 (or / (B x H x W = 8) = 1.5).
    ("width", "one", 12 / 4, 0.5),
    ("mean", "one", 12 / 8, 0.5),
    ("mean", "ignore", (2 + 4) / 8, 0.5),  # f = 2/4: weights 1; f = 4/6: zeros weigh 2
    ("mean", "zero", (2 + 2) / 8, 0.5),  # f = 2/8, 4/8: weights 1
    # as the label's foreground: (-1, 0) 4 more ones, f = 6/8: 6; (0, -1) 1 more, f = 5/8: 2 x 5/3
    ("mean", "foreground", (6 + 10 / 3) / 8, 0.5),
    # each offset over its own pairs: 2/4 + 2/6 (zero); the 1/2 level's one pair: 1/1
    ("pairs", "zero", 2 / 4 + 2 / 6, 1.0),
])
def test_tiny_batch_by_hand(normalize, outside, scm, epm):
    parts = _tiny_case(normalize, outside)
    assert parts["scm"] == pytest.approx(scm) and parts["ccm"] == pytest.approx(scm)
    # the 1/2 level [1, 2]: (-1, 0) has no pair inside; (0, -1) one pair inside (a zero, error
    # 1) and one leaving (label 1): f = 1/2 (one, foreground), 0 (ignore, zero) -> 0.05: zeros
    # weigh 1 either way; / 2 (B x pixels) or / 1 (pairs)
    assert parts["epm"] == pytest.approx(epm)


def test_foreground_head_weights_from_the_batch():
    """The authors' head loss: background weighs the number of foreground pixels and
    foreground the number of background pixels; the mean is over the summed weights."""
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 5)
    labels = torch.zeros(2, 6, 5, dtype=torch.long)
    labels[:, 1:3, 1:4] = 3  # 12 foreground, 48 background pixels
    out = {"embeddings": [torch.randn(2, 4, 6, 5)], "foreground": logits}
    heads = {"scm": False, "ccm": False, "epm": False, "mask_weight": 2.0}
    _, parts = PEALoss([(0, -1)], 2, fg_weighting="batch", **heads)(out, labels)
    ce = F.cross_entropy(logits, (labels > 0).long(), reduction="none")
    w = torch.where(labels > 0, 48.0, 12.0)
    assert float(parts["fg"]) == pytest.approx(2.0 * float((w * ce).sum() / w.sum()), rel=1e-5)
    w = torch.where(labels > 0, 10.0, 1.0)
    fixed = float(PEALoss([(0, -1)], 2, **heads)(out, labels)[1]["fg"])
    assert fixed == pytest.approx(2.0 * float((w * ce).sum() / w.sum()), rel=1e-5)


def test_paper_config_3d_levels_use_only_the_nearest_offsets():
    cfg = load_config(shipped_config("ac3ac4"))
    offsets, group = resolve_offsets(cfg.DATA)
    levels = settings.loss(cfg, offsets, group).level_offsets()
    assert levels == [[(-1, 0, 0), (0, -1, 0), (0, 0, -1)]] * 4


@pytest.mark.parametrize("config, expected", [("ac3ac4", ("pairs", "zero", "foreground")),
                                              ("ac3ac4_project", ("mean", "ignore", "ignore"))])
def test_3d_configs_state_the_loss_scale_and_class_weights(config, expected):
    cfg = load_config(shipped_config(config))
    loss = settings.loss(cfg, *resolve_offsets(cfg.DATA))
    assert (loss.normalize, loss.outside, loss.epm_outside) == expected


@pytest.mark.parametrize("config", ["cvppp", "bbbc039v1"])
def test_paper_configs_2d_state_the_authors_objective(config):
    loss = load_config(shipped_config(config)).LOSS
    assert (loss.normalize, loss.outside_pairs, loss.ccm_view, loss.ccm_pass, loss.ccm_detach) == \
        ("width", "one", "official", "separate", True)
    assert loss.epm_groups == [4, 3, 2, 1]


def test_level_offsets_are_the_nearest_groups():
    offsets = offsets_from_shifts([1, 3, 5, 9, 27])
    levels = PEALoss(offsets, 2, epm_groups=[4, 3, 2, 1]).level_offsets()
    assert levels == [offsets[:8], offsets[:6], offsets[:4], offsets[:2]]
    assert levels[-1] == [(-1, 0), (0, -1)]


def test_switched_off_terms_are_absent():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(_blobs(rng, 1, (16, 16)))
    out = {"embeddings": [torch.from_numpy(e).float() for e in _pyramid(rng, 1, (16, 16))], "foreground": None}
    _, parts = PEALoss(offsets_from_shifts([1, 3]), 2, ccm=False, epm=False)(out, labels, out)
    assert set(parts) == {"scm"}
