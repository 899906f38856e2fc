"""Tiled 2D prediction (pea.tiles, `pea predict --tile`) against the whole image: equal to 1e-5
everywhere, the border included, for both padding modes and a configured padded size; a halo
below the receptive field would not be; the receptive field bounds the gradient's reach; a
network that is not translation-equivariant is refused."""
import numpy as np
import pytest
import tifffile
import torch
from checkpoints import project_checkpoint

from pea.affinity import offsets_from_shifts
from pea.cli import main
from pea.errors import PEAInputError
from pea.inference import predict_image
from pea.models import build_model
from pea.tiles import TileLayout, predict_image_tiled, receptive_field, tile_layout

pytestmark = pytest.mark.usefixtures("one_thread")
OFFSETS = offsets_from_shifts([1, 3, 9, 27])
SMALL = [4, 8, 8, 16, 16]


def _net(backbone="resunet", filters=SMALL, fg_head=True):
    torch.manual_seed(0)
    return build_model({"backbone": backbone, "in_channels": 3, "filters": filters, "fg_head": fg_head,
                        "emb_dim": 16}).eval()


@pytest.fixture(scope="module")
def net():
    model = _net()
    return model, tile_layout(model, OFFSETS, 3)


IMAGE = np.random.default_rng(1).random((150, 230, 3)).astype(np.float32)  # several tiles, borders of every kind


@pytest.mark.parametrize("pad_mode, padded_size", [("reflect", None), ("zero", None), ("reflect", (176, 240))])
def test_tiles_equal_the_whole_image_everywhere(net, pad_mode, padded_size):
    model, layout = net
    data = {"padded_size": padded_size, "pad_mode": pad_mode, "normalize": "unit"}
    whole_affs, whole_fg = predict_image(model, IMAGE, OFFSETS, **data)
    affs, fg = predict_image_tiled(model, IMAGE, OFFSETS, tile=(40, 60), layout=layout, **data)
    assert affs.shape == whole_affs.shape and fg.shape == whole_fg.shape
    np.testing.assert_allclose(affs, whole_affs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fg, whole_fg, rtol=0, atol=1e-5)


def test_a_halo_below_the_receptive_field_is_not_enough(net):
    model, layout = net
    data = {"padded_size": None, "pad_mode": "reflect", "normalize": "unit"}
    whole = predict_image(model, IMAGE, OFFSETS, **data)[0]
    short = predict_image_tiled(model, IMAGE, OFFSETS, tile=(40, 60), layout=TileLayout(32, layout.align), **data)[0]
    assert layout.halo > 32 and np.abs(short - whole).max() > 1e-3


def test_the_receptive_field_bounds_the_gradient_reach():
    model = _net(fg_head=False)
    radius, align = receptive_field(model, 3)
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    model(x)["embeddings"][0][0, :, 128, 128].sum().backward()
    rows, cols = np.nonzero(x.grad.abs().sum(1)[0].numpy())
    reach = max(128 - rows.min(), rows.max() - 128, 128 - cols.min(), cols.max() - 128)
    assert align == 16 and reach <= radius < 2 * reach


def test_a_network_that_is_not_translation_equivariant_is_refused():
    with pytest.raises(PEAInputError, match="tiles differ from its whole-image output"):
        tile_layout(_net("resunet_official"), OFFSETS, 3)  # 2x upsampling with align_corners=True


def test_pea_predict_tile_writes_the_whole_image_result(tmp_path, capsys):
    ckpt = tmp_path / "cvppp.ckpt"
    project_checkpoint(ckpt, "cvppp_demo", {"MODEL": {"backbone": "resunet", "filters": SMALL},
                                            "DATA": {"padded_size": None}})
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "big.tif", (np.random.default_rng(3).random((200, 260)) * 255).astype(np.uint8))
    argv = ["predict", "--model", str(ckpt), "--input", str(images), "--device", "cpu", "--save-affinities"]
    assert main(argv + ["--output", str(tmp_path / "whole")]) == 0
    assert main(argv + ["--output", str(tmp_path / "tiled"), "--tile", "48", "48"]) == 0
    assert "with a halo of" in capsys.readouterr().err
    whole, tiled = (tifffile.imread(tmp_path / f / "big_affinities.tif") for f in ("whole", "tiled"))
    assert tiled.shape == whole.shape and tiled.shape[1:] == (100, 130)  # cvppp_demo works at half resolution
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "tiled" / "big.tif"),
                                  tifffile.imread(tmp_path / "whole" / "big.tif"))
    assert main(argv + ["--output", str(tmp_path / "w"), "--tile", "48", "48", "--set", "TEST.window=[64,64]",
                        "--set", "TEST.overlap=[16,16]"]) == 2
    assert "--tile and TEST.window" in capsys.readouterr().err
