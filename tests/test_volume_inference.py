"""Sliding-window inference on volumes: blended windows reproduce one whole pass of a network
whose output at a voxel depends on that voxel only."""
import numpy as np
import pytest
import torch

from pea.affinity import EM_OFFSETS, embedding_affinity
from pea.data.common import Sample
from pea.inference import PredictOptions, SegmentOptions, predict_windows, segment_sample
from pea.windows import gaussian_weight, starts



class PerVoxel(torch.nn.Module):
    """1x1x1 convolutions: the embedding of a voxel sees that voxel only."""

    def __init__(self, emb_dim: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv3d(1, 16, 1), torch.nn.Tanh(), torch.nn.Conv3d(16, emb_dim, 1))

    def forward(self, x):
        return {"embeddings": [self.net(x)], "foreground": None}


def _whole_pass(model, volume, offsets):
    x = torch.from_numpy(((volume - 0.5) / 0.25).astype(np.float32)).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        return torch.relu(embedding_affinity(model(x)["embeddings"][0], offsets))[0].numpy()


def _covered(shape, window, overlap, offsets):
    """(C, *shape): 1 where some window holds both p and p + o (computed per axis)."""
    out = np.ones((len(offsets),) + tuple(shape), bool)
    for c, off in enumerate(offsets):
        for d, (n, w, o) in enumerate(zip(shape, window, off)):
            w = min(w, n)
            i = np.arange(n)
            lo, hi = np.minimum(i, i + o), np.maximum(i, i + o)
            ok = np.zeros(n, bool)
            for s in starts(n, w, overlap[d]):
                ok |= (lo >= s) & (hi < s + w)
            out[c] &= ok.reshape([-1 if k == d else 1 for k in range(len(shape))])
    return out


@pytest.mark.parametrize("shape, window, overlap", [
    ((11, 37, 41), (6, 16, 16), (4, 9, 9)),   # no axis a multiple of the window
    ((7, 30, 29), (9, 12, 20), (4, 9, 9)),    # window deeper than the volume in z
    ((13, 23, 50), (5, 23, 17), (4, 3, 9)),   # one window exactly covering y
])
def test_sliding_windows_equal_one_whole_pass(shape, window, overlap):
    rng = np.random.default_rng(sum(shape))
    volume = rng.random(shape + (1,), dtype=np.float32)
    model = PerVoxel().eval()
    offsets = [o for o in EM_OFFSETS if all(abs(v) <= m for v, m in zip(o, overlap))]
    got = predict_windows(model, volume, offsets, window, overlap=overlap, normalize="unit", progress=False)
    expected = _whole_pass(model, volume, offsets)
    assert got.shape == (len(offsets),) + shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_pairs_that_no_window_holds_are_zero_and_the_rest_exact():
    shape, window, overlap = (10, 40, 44), (6, 24, 24), (2, 8, 8)  # 27-px offsets exceed the overlap
    volume = np.random.default_rng(3).random(shape + (1,), dtype=np.float32)
    model = PerVoxel().eval()
    got = predict_windows(model, volume, EM_OFFSETS, window, overlap=overlap, normalize="unit", progress=False)
    covered = _covered(shape, window, overlap, EM_OFFSETS)
    assert 0 < covered.mean() < 1
    np.testing.assert_allclose(got, _whole_pass(model, volume, EM_OFFSETS) * covered, rtol=0, atol=2e-6)


def test_window_starts_cover_the_axis_with_the_overlap():
    for n, w, o in [(37, 16, 9), (16, 16, 4), (100, 18, 8), (5, 9, 2)]:
        found = starts(n, min(w, n), o)
        w = min(w, n)
        assert found[0] == 0 and found[-1] + w == n
        assert all(b - a <= w - o for a, b in zip(found, found[1:]))


def test_segment_sample_runs_each_method_on_a_volume():
    shape = (6, 32, 32)
    volume = np.random.default_rng(0).random(shape + (1,), dtype=np.float32)
    options = {"predict_options": PredictOptions(normalize="unit", window=[6, 20, 20], overlap=[2, 8, 8]),
               "segment_options": SegmentOptions(strides=[1, 10, 10])}
    sample = Sample("v", volume, None, None, shape, None)
    out = segment_sample(PerVoxel().eval(), sample, EM_OFFSETS, methods=("waterz", "lmc", "mutex"), **options)
    assert out["affs"].shape == (12,) + shape and out["fg"] is None and out["mask"] is None
    # the windows of the options: the whole pass where some window holds both voxels, else 0
    covered = _covered(shape, (6, 20, 20), (2, 8, 8), EM_OFFSETS)
    np.testing.assert_allclose(out["affs"], _whole_pass(PerVoxel().eval(), volume, EM_OFFSETS) * covered,
                               rtol=0, atol=2e-6)
    assert set(out["seg"]) == {"waterz", "lmc", "mutex"}
    for seg in out["seg"].values():
        assert seg.shape == shape and seg.min() >= 1  # every voxel belongs to a segment
    with pytest.raises(ValueError, match="unknown partitioner"):
        segment_sample(PerVoxel().eval(), sample, EM_OFFSETS, methods=("watershed",), **options)


def _official_windows(model, volume, offsets, window, stride, context):
    """The authors' sliding windows written out plainly: reflect padding, windows at
    min(k * stride, n - window), unit-step channels' first plane copied from the second, ReLU,
    weights 1e-6 + exp(-d^2 / 0.08) with d the distance from the window centre on a [-1, 1] grid."""
    padded = np.pad(volume, [(c, c) for c in context] + [(0, 0)], mode="reflect")
    shape = padded.shape[:-1]
    axes = [np.linspace(-1, 1, w) for w in window]
    dist2 = sum(np.meshgrid(*[a * a for a in axes], indexing="ij"))
    weight = 1e-6 + np.exp(-dist2 / (2 * 0.2 ** 2))
    out = np.zeros((len(offsets),) + shape)
    total = np.zeros(shape)
    counts = [int(np.ceil((n - w) / s)) + 1 for n, w, s in zip(shape, window, stride)]
    for index in np.ndindex(*counts):
        start = [min(k * s, n - w) for k, s, n, w in zip(index, stride, shape, window)]
        sl = tuple(slice(a, a + w) for a, w in zip(start, window))
        x = torch.from_numpy(((padded[sl] - 0.5) / 0.25).astype(np.float32)).permute(3, 0, 1, 2)[None]
        with torch.no_grad():
            affs = embedding_affinity(model(x)["embeddings"][0], offsets)[0].numpy()
        for c, off in enumerate(offsets):
            nonzero = [a for a, o in enumerate(off) if o]
            if len(nonzero) == 1 and off[nonzero[0]] == -1:
                a = nonzero[0]
                first = [slice(None)] * 3
                second = [slice(None)] * 3
                first[a], second[a] = 0, 1
                affs[c][tuple(first)] = affs[c][tuple(second)]
        out[(slice(None),) + sl] += np.maximum(affs, 0) * weight
        total[sl] += weight
    out /= total
    return out[(slice(None),) + tuple(slice(c, n - c) for c, n in zip(context, shape))]


@pytest.mark.parametrize("shape, window, overlap, context", [
    ((20, 60, 52), (18, 32, 32), (8, 16, 16), (4, 12, 12)),
    ((9, 40, 40), (6, 24, 20), (2, 8, 4), (0, 0, 0)),
])
def test_gaussian_windows_match_the_authors_scheme(shape, window, overlap, context):
    rng = np.random.default_rng(3)
    volume = rng.random(shape + (1,), dtype=np.float32)
    model = PerVoxel().eval()
    stride = [w - o for w, o in zip(window, overlap)]
    got = predict_windows(model, volume, EM_OFFSETS, window, overlap=overlap, blend="gaussian", context=context,
                          normalize="unit", progress=False)
    expected = _official_windows(model, volume, EM_OFFSETS, window, stride, context)
    assert got.shape == (12,) + shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_gaussian_weight_peaks_in_the_centre():
    w = gaussian_weight((5, 7, 9))
    assert w.shape == (5, 7, 9) and w.argmax() == np.ravel_multi_index((2, 3, 4), w.shape)
    assert w[2, 3, 4] == pytest.approx(1 + 1e-6) and w[0, 0, 0] == pytest.approx(1e-6 + np.exp(-3 / 0.08))


@pytest.mark.parametrize("blend", ["ramp", "gaussian"])
def test_window_batches_and_bf16_agree_with_one_window_in_fp32(blend):
    rng = np.random.default_rng(5)
    volume = rng.random((10, 40, 36, 1), dtype=np.float32)
    model = PerVoxel().eval()
    base = {"normalize": "unit", "window": [6, 20, 20], "overlap": [2, 8, 8], "blend": blend, "context": [2, 4, 4]}
    sample = Sample("v", volume, None, None, volume.shape[:-1], None)

    def affs(**speed):
        return segment_sample(model, sample, EM_OFFSETS, predict_options=PredictOptions(**base, **speed))["affs"]

    one = affs()
    batched = affs(batch=5)
    np.testing.assert_allclose(batched, one, rtol=0, atol=1e-6)
    bf16 = affs(amp="bf16")
    # bf16 network, float32 arithmetic: measured max error 0.0093 (mean 4e-4); another volume's
    # affinities differ by up to 1. Nonzero: the network did run in bf16
    assert bf16.dtype == np.float32 and 1e-4 < np.abs(bf16 - one).max() < 0.02
