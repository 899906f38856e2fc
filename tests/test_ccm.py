"""The CCM second view: flips undone, blanking where LOSS.ccm_blank says, both views' outputs."""
import torch

from pea.ccm import CrossView, second_view, undo_flip
from pea.config import make_config


def _loss_cfg(**values):
    return make_config({"LOSS": values}).LOSS


def test_second_view_flip_is_undone():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 20, 24)
    labels = torch.ones(3, 20, 24, dtype=torch.long)
    cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=0.0, ccm_flip=True)
    seen = set()
    for seed in range(12):
        view, dims = second_view(x, labels, cfg, torch.Generator().manual_seed(seed))
        seen.add(tuple(dims))
        # a pixel-wise "network" (identity): undoing the flip gives back the input exactly
        torch.testing.assert_close(undo_flip(view, dims), x)
    assert len(seen) > 1  # flips do happen


def _half_foreground():
    x = torch.ones(2, 1, 64, 64)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, :, 32:] = 1
    return x, labels


def test_second_view_masks_only_foreground():
    x, labels = _half_foreground()
    cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=1.0, ccm_flip=False)
    view, dims = second_view(x, labels, cfg, torch.Generator().manual_seed(1))
    assert dims == []
    assert (view[:, 0, :, :32] == 1).all()  # background untouched
    assert (view[:, 0, :, 32:] == 0).any()  # some foreground blanked


def test_second_view_blanks_anywhere():
    x, labels = _half_foreground()
    cfg = _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=1.0, ccm_flip=False, ccm_blank="anywhere")
    fg_only = second_view(x, labels, _loss_cfg(ccm_intensity=0.0, ccm_mask_prob=1.0, ccm_flip=False),
                          torch.Generator().manual_seed(1))[0]
    view, _ = second_view(x, labels, cfg, torch.Generator().manual_seed(1))
    assert (view[:, 0, :, :32] == 0).any()  # background blanked too
    # the same blocks: where the foreground-only view blanked, this one did as well
    assert (view[fg_only == 0] == 0).all()


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
        out, out2 = CrossView(cfg, seed=5)(_Pixelwise(), x, labels, iteration)
        torch.testing.assert_close(out["embeddings"][0], 2 * x)
        torch.testing.assert_close(out2["embeddings"][0], 2 * x)  # the flips are undone
        assert out["foreground"].shape[0] == 2 and out2["foreground"].shape[0] == 2
        _, dims = second_view(x, labels, cfg, torch.Generator().manual_seed(5 * 1_000_003 + iteration))
        flipped += bool(dims)
    assert flipped  # some iterations flip, and still come back aligned
