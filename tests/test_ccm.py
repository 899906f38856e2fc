"""The CCM second view (the project's and the authors'), flips and transposes undone, the
separate forward pass and the stop-gradient target."""
import copy
import itertools

import numpy as np
import pytest
import torch

from pea.affinity import offsets_from_shifts
from pea.augment import normalize_tensor
from pea.ccm import box_mask, official_view, orient, second_view
from pea import settings
from pea.config import load_config, make_config, shipped_config

PAPER_2D = load_config(shipped_config("cvppp")).LOSS
PAPER_3D = load_config(shipped_config("ac3ac4")).LOSS


def _loss_cfg(**values):
    return make_config({"LOSS": values}).LOSS


def _official(base=PAPER_2D, **values):
    """A paper config's LOSS section with some keys changed."""
    cfg = copy.deepcopy(base)
    cfg.update(values)
    return cfg


def _box(cfg):
    """`box_mask`'s keyword arguments from a LOSS section."""
    keys = ("boxes", "box_min", "box_max", "blank", "min_foreground")
    return {k: v for k, v in settings.official_view_options(cfg).items() if k in keys}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# -- the project's view ----------------------------------------------------------------------
def test_second_view_flip_is_undone():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 20, 24)
    labels = torch.ones(3, 20, 24, dtype=torch.long)
    cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=0.0, ccm_flip=True)
    seen = set()
    for seed in range(12):
        view, rules = second_view(x, labels, **settings.project_view_options(cfg), generator=_gen(seed))
        assert (rules == rules[:1]).all()  # one flip for the batch
        seen.add(tuple(rules[0].tolist()))
        # a pixel-wise "network" (identity): undoing the flip gives back the input exactly
        torch.testing.assert_close(orient(view, rules, inverse=True), x)
    assert len(seen) > 1  # flips do happen


def _half_foreground():
    x = torch.ones(2, 1, 64, 64)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, :, 32:] = 1
    return x, labels


def test_second_view_masks_only_foreground():
    x, labels = _half_foreground()
    cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=1.0, ccm_flip=False)
    view, rules = second_view(x, labels, **settings.project_view_options(cfg), generator=_gen(1))
    assert not rules.any()
    assert (view[:, 0, :, :32] == 1).all()  # background untouched
    assert (view[:, 0, :, 32:] == 0).any()  # some foreground blanked


def test_second_view_blanks_anywhere():
    x, labels = _half_foreground()
    cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=1.0, ccm_flip=False, ccm_blank="anywhere")
    fg_cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=1.0, ccm_flip=False)
    fg_only = second_view(x, labels, **settings.project_view_options(fg_cfg), generator=_gen(1))[0]
    view, _ = second_view(x, labels, **settings.project_view_options(cfg), generator=_gen(1))
    assert (view[:, 0, :, :32] == 0).any()  # background blanked too
    # the same blocks: where the foreground-only view blanked, this one did as well
    assert (view[fg_only == 0] == 0).all()


# -- flips and transposes --------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [(6, 6), (3, 5, 5)])
def test_orient_is_undone_for_every_rule(spatial):
    x = torch.randn(1, 2, *spatial)
    outcomes = set()
    for bits in itertools.product([False, True], repeat=len(spatial) + 1):
        rules = torch.tensor([bits])
        moved = orient(x, rules)
        outcomes.add(moved.numpy().tobytes())
        torch.testing.assert_close(orient(moved, rules, inverse=True), x)
    assert len(outcomes) == 2 ** (len(spatial) + 1)  # every rule a different orientation


def test_official_view_draws_flips_and_transposes_per_sample():
    x = torch.rand(64, 1, 8, 8)
    cfg = _official(ccm_intensity=0.0, ccm_boxes=[0, 0])
    view, rules = official_view(x, torch.zeros(64, 8, 8, dtype=torch.long), **settings.official_view_options(cfg),
                                generator=_gen(0))
    torch.testing.assert_close(view, orient(x, rules))
    assert rules.shape == (64, 3) and 0.3 < rules.float().mean() < 0.7
    assert len({tuple(r) for r in rules.tolist()}) == 8  # x flip, y flip and transpose: 3 bits
    _, rules = official_view(torch.rand(8, 1, 8, 10), torch.zeros(8, 8, 10, dtype=torch.long),
                             **settings.official_view_options(cfg), generator=_gen(0))
    assert not rules[:, -1].any()  # no transpose of a non-square crop


# -- the authors' view: intensity ------------------------------------------------------------
def test_official_intensity_is_within_5_percent_one_value_for_all_channels():
    x = 0.2 + 0.6 * torch.rand(32, 3, 8, 8)  # no clipping at +-5%
    cfg = _official(ccm_boxes=[0, 0], ccm_flip=False, ccm_transpose=False)
    view, _ = official_view(x, torch.zeros(32, 8, 8, dtype=torch.long), **settings.official_view_options(cfg),
                            generator=_gen(3))
    scales, shifts = [], []
    for a, b in zip(x.reshape(32, -1).double(), view.reshape(32, -1).double()):
        design = torch.stack([a, torch.ones_like(a)], 1)
        (scale, shift), *_ = np.linalg.lstsq(design.numpy(), b.numpy(), rcond=None)
        np.testing.assert_allclose(scale * a.numpy() + shift, b.numpy(), atol=1e-5)  # one value, all channels
        scales.append(scale - 1)
        shifts.append(shift)
    scales, shifts = np.abs(scales), np.abs(shifts)
    assert scales.max() <= 0.05 + 1e-5 and shifts.max() <= 0.05 + 1e-5
    assert scales.max() > 0.035 and shifts.max() > 0.035  # the range is used


def test_official_intensity_is_clipped():
    x = torch.cat([torch.zeros(16, 1, 4, 4), torch.ones(16, 1, 4, 4)], 2)
    cfg = _official(ccm_boxes=[0, 0], ccm_flip=False, ccm_transpose=False)
    view, _ = official_view(x, torch.zeros(16, 8, 4, dtype=torch.long), **settings.official_view_options(cfg),
                            generator=_gen(0))
    assert view.min() >= 0 and view.max() <= 1 and (view == 1).any() and (view == 0).any()


def test_official_3d_intensity_per_section_with_gamma():
    x = 0.3 + 0.4 * torch.rand(64, 1, 4, 6, 6)
    cfg = _official(PAPER_3D, ccm_boxes=[0, 0], ccm_flip=False, ccm_transpose=False)
    view, _ = official_view(x, torch.ones(64, 4, 6, 6, dtype=torch.long), **settings.official_view_options(cfg),
                            generator=_gen(0))
    changed = ~torch.isclose(view, x).flatten(1).all(1)
    assert 0.3 < changed.float().mean() < 0.7  # with chance 0.5
    # one draw per section: a grey volume (the same draws) comes out one grey level per section,
    # a different one in each of the 4 (each section of the random x was non-constant anyway)
    grey, _ = official_view(torch.full_like(x, 0.5), torch.ones(64, 4, 6, 6, dtype=torch.long),
                            **settings.official_view_options(cfg), generator=_gen(0))
    levels = grey[changed][:, 0].flatten(2)  # (n, z, voxels); equal up to the last bit of pow
    torch.testing.assert_close(levels, levels[..., :1].expand_as(levels), rtol=0, atol=1e-6)
    assert (levels[..., 0].sort(1).values.diff(dim=1) > 1e-5).all()
    # (x (1 + c) + d) ** 2^g with |c|, |d| <= 0.05 and |g| <= 1
    low = (0.95 * x - 0.05).clamp(0, 1) ** 2
    high = (1.05 * x + 0.05).clamp(0, 1) ** 0.5
    assert (view >= low - 1e-6).all() and (view <= high + 1e-6).all()
    exponent = torch.log(view[changed]) / torch.log(x[changed])  # ~ 2^g, the shift aside
    assert exponent.min() < 0.6 and exponent.max() > 1.7  # the range is used


# -- the authors' view: boxes ----------------------------------------------------------------
def _bbox_labels(batch=1, shape=(64, 64)):
    labels = torch.zeros(batch, *shape, dtype=torch.long)
    labels[:, 10:41, 20:51] = 1
    return labels


def test_official_2d_boxes_are_squares_inside_the_foreground_box():
    labels = _bbox_labels()
    cfg = _official(ccm_boxes=[1, 1])
    sides = []
    for seed in range(80):
        mask = box_mask(labels, **_box(cfg), generator=_gen(seed))[0]
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        side = len(rows)
        assert len(cols) == side and mask.sum() == side * side  # one square
        if side:
            assert rows.min() >= 10 and rows.max() <= 40 and cols.min() >= 20 and cols.max() <= 50
        sides.append(side)
    assert min(sides) <= 2 and max(sides) >= 18 and 7 < np.mean(sides) < 13  # 0-20 px


def test_official_2d_box_count_is_0_to_20():
    labels = _bbox_labels()
    cfg = _official(ccm_box_min=[1, 1], ccm_box_max=[1, 1])  # one-pixel boxes: count = pixels
    counts = [int(box_mask(labels, **_box(cfg), generator=_gen(seed)).sum()) for seed in range(80)]
    assert max(counts) <= 20 and min(counts) <= 2 and 7 < np.mean(counts) < 13


def test_official_2d_boxes_filled_with_the_foreground_mean():
    x = torch.rand(4, 3, 64, 64)
    labels = _bbox_labels(4)
    cfg = _official(ccm_intensity=0.0, ccm_flip=False, ccm_transpose=False, ccm_boxes=[20, 20],
                    ccm_box_min=[10, 10])
    view, _ = official_view(x, labels, **settings.official_view_options(cfg), generator=_gen(0))
    mean = x[:, :, 10:41, 20:51].mean((2, 3))
    changed = (view != x).any(1)
    assert changed.any(1).any(1).all()
    for b in range(4):
        for c in range(3):
            torch.testing.assert_close(view[b, c][changed[b]], mean[b, c].expand(int(changed[b].sum())))


def test_official_2d_boxes_go_anywhere_when_the_foreground_is_small():
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, 30:35, 30:35] = 1  # 25 px, narrower than most squares
    cfg = _official(ccm_boxes=[20, 20], ccm_box_min=[12, 12], ccm_box_max=[12, 12])
    outside = [bool((box_mask(labels, **_box(cfg), generator=_gen(s))[0] & (labels[0] == 0)).any())
               for s in range(5)]
    assert all(outside)
    labels[:, 5:60, 5:60] = 1  # large enough, but under ccm_min_foreground: anywhere too
    labels[:, 5:60, 5] = 0
    inside = box_mask(labels, **_box(cfg), generator=_gen(0))[0]
    assert not (inside & ~torch.zeros_like(inside).index_fill_(0, torch.arange(5, 60), True)).any()
    few = _official(ccm_boxes=[20, 20], ccm_box_min=[12, 12], ccm_box_max=[12, 12], ccm_min_foreground=10**6)
    rows = [box_mask(labels, **_box(few), generator=_gen(s))[0].any(1).nonzero().flatten() for s in range(10)]
    assert min(int(r.min()) for r in rows) < 5 or max(int(r.max()) for r in rows) >= 59


def test_official_3d_boxes_sizes_and_zero_fill():
    cfg = _official(PAPER_3D, ccm_boxes=[1, 1], ccm_intensity_prob=0.0, ccm_flip=False, ccm_transpose=False)
    labels = torch.ones(1, 18, 48, 48, dtype=torch.long)
    x = 0.5 + 0.5 * torch.rand(1, 1, 18, 48, 48)
    z_sizes, yx_sizes = set(), set()
    for seed in range(40):
        view, _ = official_view(x, labels, **settings.official_view_options(cfg), generator=_gen(seed))
        box = view[0, 0] == 0
        z, y, xx = (box.flatten(1).any(1), box.any(0).any(1), box.any(0).any(0))
        assert int(box.sum()) == int(z.sum() * y.sum() * xx.sum())  # one box, set to 0
        assert 5 <= z.sum() <= 10 and 10 <= y.sum() <= 20 and y.sum() == xx.sum()
        z_sizes.add(int(z.sum()))
        yx_sizes.add(int(y.sum()))
    assert len(z_sizes) >= 4 and len(yx_sizes) >= 6
    cfg = _official(PAPER_3D, ccm_box_min=[1, 1, 1], ccm_box_max=[1, 1, 1])
    counts = [int(box_mask(labels, **_box(cfg), generator=_gen(seed)).sum()) for seed in range(40)]
    assert max(counts) <= 60 and 20 < np.mean(counts) < 40  # 0-60 boxes


# -- both views through the network ---------------------------------------------------------
class _Pixelwise(torch.nn.Module):
    """A per-pixel network: the embedding pyramid is the input itself at every level."""

    def forward(self, x):
        return {"embeddings": [x * 2.0, x[..., ::2, ::2]], "foreground": x[:, :1]}


def test_cross_view_returns_both_views_in_the_first_frame():
    torch.manual_seed(3)
    x = torch.randn(2, 4, 16, 20)
    labels = torch.ones(2, 16, 20, dtype=torch.long)
    cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=0.0, ccm_flip=True)
    flipped = 0
    for iteration in range(8):
        cross = settings.cross_view(cfg, 5, "unit")
        out, out2 = cross(_Pixelwise(), x, labels, iteration)
        torch.testing.assert_close(out["embeddings"][0], 2 * x)
        torch.testing.assert_close(out2["embeddings"][0], 2 * x)  # the flips are undone
        assert out["foreground"].shape[0] == 2 and out2["foreground"].shape[0] == 2
        flipped += bool(cross.view(x, labels, iteration)[1].any())
    assert flipped  # some iterations flip, and still come back aligned


def test_official_cross_view_undoes_flips_and_transposes_of_normalised_inputs():
    x = normalize_tensor(torch.rand(6, 3, 16, 16), "imagenet")
    labels = torch.ones(6, 16, 16, dtype=torch.long)
    cfg = _official(ccm_intensity=0.0, ccm_boxes=[0, 0])
    cross = settings.cross_view(cfg, 1, "imagenet")
    out, out2 = cross(_Pixelwise(), x, labels, 0)
    torch.testing.assert_close(out2["embeddings"][0], 2 * x, atol=1e-5, rtol=1e-5)
    assert cross.view(x, labels, 0)[1][:, -1].any()  # transposes happened


class _Net(torch.nn.Module):
    """Conv + BatchNorm + conv: BatchNorm makes the output depend on the batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 1))

    def forward(self, x):
        return {"embeddings": [self.body(x)], "foreground": None}


def _batch():
    torch.manual_seed(1)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 2:9, 3:12], labels[:, 9:14, 5:15] = 1, 2
    return torch.randn(2, 3, 16, 16), labels


def _ccm_grads(cfg, model, x, labels):
    loss = settings.loss({"LOSS": {**cfg, "scm": False, "epm": False}}, offsets_from_shifts([1, 3]), 2)
    out, out2 = settings.cross_view(cfg, 2, "imagenet")(model, x, labels, 0)
    model.zero_grad()
    loss(out, labels, out2)[0].backward()
    return out, out2, {k: p.grad.clone() for k, p in model.named_parameters()}


def test_official_ccm_gradient_flows_through_the_first_view_only():
    x, labels = _batch()
    model = _Net().train()
    out, out2, grads = _ccm_grads(PAPER_2D, model, x, labels)
    assert not out2["embeddings"][0].requires_grad
    # the same loss with the second view's embedding given as a constant: the same gradients
    target = out2["embeddings"][0].clone()
    loss = settings.loss({"LOSS": {**PAPER_2D, "scm": False, "epm": False}}, offsets_from_shifts([1, 3]), 2)
    model.zero_grad()
    loss(model(x), labels, {"embeddings": [target]})[0].backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(grads[k], p.grad)
    # the first view had its own pass: its BatchNorm statistics are those of the batch alone
    torch.testing.assert_close(out["embeddings"][0], _Net().train()(x)["embeddings"][0])
    # without the stop-gradient (and in one joint pass, the project's) the gradients differ
    _, _, joint = _ccm_grads(_official(ccm_detach=False), _Net().train(), x, labels)
    assert any(not torch.allclose(grads[k], joint[k]) for k in grads)
