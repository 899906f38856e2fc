"""The N-dimensional core against hand-computed cases and naive loops."""
import numpy as np
import pytest
import torch

from pea.affinity import (EM_OFFSETS, affinity_loss, affinity_targets, embedding_affinity, nearest_downsample,
                          offsets_from_shifts, widen_border)
from reference import affinities, balanced_weights, weighted_mse


def test_offsets_from_shifts():
    assert offsets_from_shifts([1, 3]) == [(-1, 0), (0, -1), (-3, 0), (0, -3)]
    assert offsets_from_shifts([2], neighbor=8) == [(-2, 0), (0, -2), (-2, -2), (-2, 2)]
    assert len(offsets_from_shifts([1, 3, 5, 9, 27])) == 10


def test_targets_hand_computed():
    lab = torch.tensor([[[1, 1, 2],
                         [0, 0, 2]]])
    target, mask = affinity_targets(lab, [(-1, 0), (0, -1), (0, 2)])
    # (-1, 0): pixel (r, c) vs (r-1, c); row 0 has no partner
    np.testing.assert_array_equal(target[0, 0], [[0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(mask[0, 0], [[0, 0, 0], [1, 1, 1]])
    # (0, -1): vs the left neighbour; background pairs count as the same (1)
    np.testing.assert_array_equal(target[0, 1], [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mask[0, 1], [[0, 1, 1], [0, 1, 1]])
    # (0, 2): vs two to the right
    np.testing.assert_array_equal(target[0, 2], [[0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(mask[0, 2], [[1, 0, 0], [1, 0, 0]])


def test_targets_background_rule_none():
    lab = torch.tensor([[[1, 1, 0, 0, 2]]])
    same, _ = affinity_targets(lab, [(0, -1)], background="same")
    none, mask = affinity_targets(lab, [(0, -1)], background="none")
    np.testing.assert_array_equal(same[0, 0, 0], [0, 1, 0, 1, 0])  # the background pair is "same"
    np.testing.assert_array_equal(none[0, 0, 0], [0, 1, 0, 0, 0])  # background affine to nothing
    np.testing.assert_array_equal(mask[0, 0, 0], [0, 1, 1, 1, 1])


def test_targets_3d_hand_computed():
    lab = torch.zeros((1, 3, 2, 2), dtype=torch.long)
    lab[0, 0] = 1
    lab[0, 1] = 1
    lab[0, 2] = 2
    target, mask = affinity_targets(lab, [(-1, 0, 0), (-2, 0, 0)])
    np.testing.assert_array_equal(target[0, 0, :, 0, 0], [0, 1, 0])
    np.testing.assert_array_equal(mask[0, 0, :, 0, 0], [0, 1, 1])
    np.testing.assert_array_equal(target[0, 1, :, 0, 0], [0, 0, 0])
    np.testing.assert_array_equal(mask[0, 1, :, 0, 0], [0, 0, 1])


def test_targets_against_naive_loop():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, size=(2, 9, 11))
    offsets = offsets_from_shifts([1, 3, 5], neighbor=8)
    target, mask = affinity_targets(torch.from_numpy(lab), offsets)
    for b in range(2):
        for c, (dy, dx) in enumerate(offsets):
            for y in range(9):
                for x in range(11):
                    inside = 0 <= y + dy < 9 and 0 <= x + dx < 11
                    assert mask[b, c, y, x] == float(inside)
                    if inside:
                        assert target[b, c, y, x] == float(lab[b, y, x] == lab[b, y + dy, x + dx])


def test_balanced_weights():
    """The reference weights (tests/reference.py) on hand-computed cases."""
    target = np.array([[[[1.0, 1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]]]])
    mask = np.ones_like(target)
    w = balanced_weights(target, mask)
    # f = 0.75 > 0.5: ones 1, zeros 0.75 / 0.25 = 3
    np.testing.assert_allclose(w[0, 0, 0], [1, 1, 1, 3])
    # f = 0.25: ones (1 - 0.25) / 0.25 = 3, zeros 1
    np.testing.assert_allclose(w[0, 1, 0], [1, 1, 1, 3])
    # f = 1 clipped to 0.99: zeros would weigh 99, ones 1
    np.testing.assert_allclose(w[0, 2, 0], [1, 1, 1, 1])
    # the mask decides which pixels count
    mask2 = np.array([[[[1.0, 1.0, 0.0, 1.0]]]])
    w2 = balanced_weights(target[:, :1], mask2)  # f = 2/3
    np.testing.assert_allclose(w2[0, 0, 0], [1, 1, 1, 2], rtol=1e-6)


def test_embedding_affinity_against_naive_loop():
    rng = np.random.default_rng(1)
    e1 = torch.from_numpy(rng.normal(size=(2, 5, 7, 8))).float()
    e2 = torch.from_numpy(rng.normal(size=(2, 5, 7, 8))).float()
    offsets = [(-1, 0), (0, -1), (-3, 2), (2, 0)]
    for other in (None, e2):
        aff = embedding_affinity(e1, offsets, other=other)
        a = e1 / e1.norm(dim=1, keepdim=True)
        b = a if other is None else e2 / e2.norm(dim=1, keepdim=True)
        for c, (dy, dx) in enumerate(offsets):
            for y in range(7):
                for x in range(8):
                    if 0 <= y + dy < 7 and 0 <= x + dx < 8:
                        expected = (a[:, :, y, x] * b[:, :, y + dy, x + dx]).sum(1)
                    else:
                        expected = torch.zeros(2)
                    torch.testing.assert_close(aff[:, c, y, x], expected, atol=1e-5, rtol=1e-5)


def test_embedding_affinity_3d_and_gradient():
    """3D values against the NumPy reference (self and cross), the gradient against finite differences."""
    gen = torch.Generator().manual_seed(2)
    e, e2 = torch.randn(2, 4, 5, 6, 7, generator=gen), torch.randn(2, 4, 5, 6, 7, generator=gen)
    for other in (None, e2):
        aff = embedding_affinity(e, EM_OFFSETS[:6], other=other)
        assert aff.shape == (2, 6, 5, 6, 7)
        expected = affinities(e.numpy(), EM_OFFSETS[:6], None if other is None else other.numpy())
        np.testing.assert_allclose(aff.numpy(), expected, rtol=1e-5, atol=1e-6)
    small = torch.randn(1, 3, 3, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: embedding_affinity(x, EM_OFFSETS[:6]), (small,))


def test_nearest_downsample():
    lab = torch.arange(64).reshape(1, 8, 8)
    np.testing.assert_array_equal(nearest_downsample(lab, (4, 4))[0], lab[0, ::2, ::2])
    np.testing.assert_array_equal(nearest_downsample(lab, (3, 8))[0], lab[0, [0, 2, 5]])


def test_weighted_mse_definition():
    aff = np.array([[[[0.5, 1.0]], [[0.0, 0.2]]]])
    target = np.array([[[[1.0, 1.0]], [[0.0, 1.0]]]])
    mask = np.array([[[[1.0, 0.0]], [[1.0, 1.0]]]])
    weight = np.array([[[[2.0, 2.0]], [[1.0, 3.0]]]])
    expected = (2 * 0.25 + 3 * 0.64) / 2  # batch 1 x 2 pixels
    assert weighted_mse(aff, target, mask, weight) == pytest.approx(expected)


def _full_map_loss(emb, labels, offsets, other=None, background="same"):
    """The loss on full-size torch maps, weights from the NumPy reference (for gradients)."""
    target, mask = affinity_targets(labels, offsets, background)
    weight = torch.from_numpy(balanced_weights(target.numpy(), mask.numpy())).float()
    aff = embedding_affinity(emb, offsets, other=other)
    return (weight * mask * (aff - target) ** 2).sum() / target[:, 0].numel()


@pytest.mark.parametrize("shape,offsets,background", [((2, 17, 13), offsets_from_shifts([1, 3, 5, 9, 27]), "same"),
                                                      ((1, 6, 20, 22), EM_OFFSETS, "same"),
                                                      ((1, 6, 20, 22), EM_OFFSETS, "none")])
def test_affinity_loss_equals_full_map_definition(shape, offsets, background):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, shape, generator=gen)
    emb = torch.randn((shape[0], 5) + shape[1:], generator=gen, requires_grad=True)
    other = torch.randn((shape[0], 5) + shape[1:], generator=gen)
    for second in (None, other):
        expected = _full_map_loss(emb, labels, offsets, second, background)
        got = affinity_loss(emb, labels, offsets, other=second, background=background)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        g1, = torch.autograd.grad(got, emb)
        g2, = torch.autograd.grad(expected, emb)
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_widen_border():
    lab = np.zeros((1, 5, 6), np.uint32)
    lab[0, :, :3] = 1
    lab[0, :, 3:] = 2
    lab[0, 0, 0] = 0
    out = widen_border(lab)
    assert (out[0, :, 2:4] == 0).all()  # both sides of the 1|2 contact
    assert (out[0, :, :2][out[0, :, :2] > 0] == 1).all() and (out[0, :, 4:] == 2).all()
    assert out[0, 1, 1] == 1  # next to background only: kept
