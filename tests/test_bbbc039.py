"""BBBC039V1 on tiny generated data: reader, normalisation, padding, foreground head and mask,
post-processing, training and inference."""
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from pea.affinity import affinity_targets, embedding_affinity, offsets_from_shifts
from pea import settings
from pea.config import load_config, make_config, shipped_config
from pea.data import bbbc039, get_reader
from pea.data.common import pad_to, padded_shape
from pea.errors import PEAInputError
from pea.inference import foreground_mask, predict_image, segment, to_input
from pea.losses import PEALoss
from pea.metrics import aggregated_jaccard_index
from pea.models import build_model
from pea.inference_cli import image_inference_main as inference_main
from pea.scripts import train_main
from pea.synth.bbbc039 import generate_bbbc039

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts_bbbc039v1"
SHIFTS = [1, 3, 5, 9, 11]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bbbc039")
    generate_bbbc039(root, seed=4, n_train=4, n_valid=1, n_test=2, height=96, width=112)
    return root


def data_cfg(data_dir, **extra):
    return make_config({"DATA": {"dataset": "bbbc039v1", "data_dir": str(data_dir), "normalize": "percentile",
                                 **extra}}).DATA


def listed(data_dir, name):
    return [line[:-4] for line in (Path(data_dir) / "metadata" / name).read_text().split()]


def test_configs_hold_the_paper_settings():
    cfg = load_config(shipped_config("bbbc039v1"))
    assert cfg.DATA.shifts == SHIFTS and cfg.TEST.strides == [10, 10] and cfg.DATA.crop_size == [256, 256]
    assert cfg.TRAIN.batch_size == 8 and cfg.LOSS.mask_weight == 1000 and cfg.MODEL.in_channels == 3
    assert cfg.TEST.mask == "pred" and cfg.TRAIN.select_metric == "aji"
    # the authors' input: min-max scaled, 3 channels, zero-padded to 704x704
    assert (cfg.DATA.normalize, cfg.DATA.percentiles, cfg.DATA.channels) == ("none", [0, 100], 3)
    assert cfg.DATA.padded_size == [704, 704] and cfg.DATA.pad_mode == "zero"
    assert (cfg.TEST.fg_min_size, cfg.TEST.fg_connectivity) == (25, 2)
    demo = load_config(shipped_config("bbbc039v1_demo"))
    assert demo.DATA.dataset == "bbbc039v1" and demo.TEST.mask == "pred" and demo.MODEL.in_channels == 1  # the project input
    assert get_reader("bbbc039v1") is bbbc039


def test_reader_splits_labels_and_scaling(tiny_data):
    train = bbbc039.load_split(data_cfg(tiny_data), "train")
    valid = bbbc039.load_split(data_cfg(tiny_data), "validation")
    test = bbbc039.load_split(data_cfg(tiny_data), "test")
    assert [s.name for s in train] == listed(tiny_data, "training.txt")
    assert [s.name for s in valid] == listed(tiny_data, "validation.txt")
    assert [s.name for s in test] == listed(tiny_data, "test.txt") and len(test) == 2
    s = test[0]
    label_png = np.asarray(Image.open(tiny_data / "label_instance" / f"{s.name}.png"))
    np.testing.assert_array_equal(s.gt, label_png)  # test labels exist: test mode is scored
    np.testing.assert_array_equal(s.fg, label_png > 0)
    assert s.image.shape == (96, 112, 1) and s.image.dtype == np.float32 and s.shape == (96, 112)
    half = bbbc039.load_split(data_cfg(tiny_data, scale=0.5), "test")[0]
    assert half.image.shape == (48, 56, 1) and half.labels.shape == (48, 56)
    assert half.shape == (96, 112) and half.gt.shape == (96, 112)
    np.testing.assert_array_equal(half.labels, label_png[::2, ::2])  # nearest neighbour


def test_percentile_normalisation(tiny_data):
    name = listed(tiny_data, "training.txt")[0]
    raw = tifffile.imread(tiny_data / "images" / f"{name}.tif").astype(np.float64)
    assert raw.dtype != np.uint8 and raw.max() > 255  # 16-bit camera values
    image = bbbc039.load_split(data_cfg(tiny_data, percentiles=[2.0, 98.0]), "train")[0].image[..., 0]
    lo, hi = np.percentile(raw, [2.0, 98.0])
    np.testing.assert_allclose(image, np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert 0.015 < np.mean(image == 0) < 0.03 and 0.015 < np.mean(image == 1) < 0.03
    full = bbbc039.load_split(data_cfg(tiny_data, percentiles=[0, 100]), "train")[0].image[..., 0]
    np.testing.assert_allclose(full, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-5)  # min-max


def test_padding_to_704_and_back():
    image = np.random.default_rng(0).random((520, 696, 1)).astype(np.float32)
    padded, crop = pad_to(image, padded_shape(image.shape[:2], [704, 704]))
    assert padded.shape == (704, 704, 1) and crop == (slice(92, 612), slice(4, 700))
    np.testing.assert_array_equal(padded[crop], image)
    np.testing.assert_array_equal(padded[91], padded[93])  # reflected, not constant


class Pointwise(torch.nn.Module):
    """A stand-in network whose outputs at a pixel depend on that pixel's value only."""

    def forward(self, x):
        emb = torch.cat([torch.cos(3 * x), torch.sin(3 * x), torch.ones_like(x)], 1)
        return {"embeddings": [emb], "foreground": torch.cat([x, 1 - x], 1)}


def test_predict_image_pads_and_crops_back_aligned():
    """The padded prediction cropped back equals the unpadded one wherever a pixel's
    partner lies inside the image (elsewhere it sees reflected pixels)."""
    image = np.random.default_rng(1).random((52, 70, 1)).astype(np.float32)
    offsets = offsets_from_shifts(SHIFTS)
    cfg = data_cfg("unused", padded_size=[64, 96])
    affs, fg = predict_image(Pointwise(), image, offsets, normalize=cfg.normalize, padded_size=cfg.padded_size)
    assert affs.shape == (10, 52, 70) and fg.shape == (52, 70)
    x = (image[..., 0] - 0.5) / 0.25  # the network input of the grey 'percentile' mode
    np.testing.assert_allclose(fg, 1 / (1 + np.exp(x - (1 - x))), rtol=1e-5)
    direct = torch.relu(embedding_affinity(Pointwise()(torch.from_numpy(x)[None, None])["embeddings"][0], offsets))[0]
    _, inside = affinity_targets(torch.zeros(1, 52, 70, dtype=torch.long), offsets)
    inside = inside[0].numpy().astype(bool)
    np.testing.assert_allclose(affs[inside], direct.numpy()[inside], atol=1e-5)


def test_reader_errors_name_the_file(tiny_data, tmp_path):
    with pytest.raises(PEAInputError, match="training.txt"):
        bbbc039.load_split(data_cfg(tmp_path), "train")
    with pytest.raises(PEAInputError, match="split 'valid'"):
        bbbc039.load_split(data_cfg(tiny_data), "valid")
    with pytest.raises(PEAInputError, match="DATA.normalize"):
        bbbc039.load_split(make_config({"DATA": {"dataset": "bbbc039v1", "data_dir": str(tiny_data),
                                                 "normalize": "imagenet"}}).DATA, "train")
    with pytest.raises(PEAInputError, match="DATA.percentiles"):
        bbbc039.load_split(data_cfg(tiny_data, percentiles=[99, 1]), "train")
    with pytest.raises(PEAInputError, match="DATA.scale"):
        bbbc039.load_split(data_cfg(tiny_data, scale=0), "train")
    bad = tmp_path / "bad"
    for sub in ("images", "label_instance", "metadata"):
        (bad / sub).mkdir(parents=True)
    (bad / "metadata" / "training.txt").write_text("a.png\nb.png\n")
    (bad / "metadata" / "test.txt").write_text("c.png\n")
    tifffile.imwrite(bad / "images" / "a.tif", np.ones((8, 9), np.uint16))
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(bad / "label_instance" / "a.png")
    with pytest.raises(PEAInputError, match=r"label_instance/b\.png"):
        bbbc039.load_split(data_cfg(bad), "train")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "label_instance" / "b.png")
    with pytest.raises(PEAInputError, match=r"images/b\.tif: image not found"):
        bbbc039.load_split(data_cfg(bad), "train")
    (bad / "images" / "b.tif").write_bytes(b"not a tiff")
    with pytest.raises(PEAInputError, match=r"images/b\.tif: cannot read"):
        bbbc039.load_split(data_cfg(bad), "train")
    tifffile.imwrite(bad / "images" / "b.tif", np.ones((9, 9), np.uint16))
    with pytest.raises(PEAInputError, match=r"label_instance/b\.png: shape \(8, 8\) differs"):
        bbbc039.load_split(data_cfg(bad), "train")
    tifffile.imwrite(bad / "images" / "b.tif", np.ones((8, 9, 3), np.uint16))
    with pytest.raises(PEAInputError, match=r"images/b\.tif: expected one grayscale channel"):
        bbbc039.load_split(data_cfg(bad), "train")
    # test images without any labels are segmented, not scored
    tifffile.imwrite(bad / "images" / "c.tif", np.arange(72, dtype=np.uint16).reshape(8, 9))
    (unlabelled,) = bbbc039.load_split(data_cfg(bad), "test")
    assert unlabelled.gt is None and unlabelled.image.shape == (8, 9, 1)


def test_foreground_head_loss_falls():
    torch.manual_seed(0)
    offsets = offsets_from_shifts([1, 3])
    model = build_model({"in_channels": 1, "emb_dim": 4, "filters": [4, 4, 4, 4, 4], "fg_head": True})
    loss = PEALoss(offsets, 2, mask_weight=1000.0)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 4:14, 5:15], labels[:, 18:28, 16:30] = 1, 2
    x = torch.randn(2, 1, 32, 32) * 0.3 + (labels > 0).float()[:, None]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fg = []
    for _ in range(15):
        total, parts = loss(model(x), labels)
        fg.append(float(parts["fg"]))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert fg[0] > 100  # weighted by mask_weight
    assert fg[-1] < 0.5 * fg[0]
    assert "fg" not in PEALoss(offsets, 2, mask_weight=0.0)(model(x), labels)[1]


def test_predicted_mask_drops_specks():
    prob = np.zeros((40, 40), np.float32)
    prob[2:8, 2:8] = 0.9  # 36 px
    prob[20:25, 20:25] = 0.8  # 25 px: kept
    prob[30:34, 30:36] = 0.7  # 24 px: removed
    prob[12, 30] = 0.6  # 1 px
    prob[15:18, 2:5] = 0.4  # under 0.5: background
    prob[30:33, 2:6], prob[33:36, 6:10] = 0.9, 0.9  # 12 + 12 px touching at a corner only
    expected = np.zeros((40, 40), bool)
    expected[2:8, 2:8] = expected[20:25, 20:25] = True
    four = foreground_mask(prob, mode="pred", min_size=25, connectivity=1)
    np.testing.assert_array_equal(four, expected)
    eight = foreground_mask(prob, mode="pred", min_size=24, connectivity=2)
    expected8 = expected.copy()
    expected8[30:34, 30:36] = True  # 24 px: kept at 24
    expected8[30:33, 2:6] = expected8[33:36, 6:10] = True  # one object of 24 px when 8-connected
    np.testing.assert_array_equal(eight, expected8)
    plain = foreground_mask(prob, mode="pred")
    np.testing.assert_array_equal(plain, prob > 0.5)
    affs = np.ones((10, 40, 40), np.float32)
    seg = segment(affs, offsets_from_shifts(SHIFTS), strides=[10, 10], mask=four)["mutex"]
    np.testing.assert_array_equal(seg > 0, expected)
    # a mask the sample or the network cannot give is the user's setting, named
    with pytest.raises(PEAInputError, match="img.png: TEST.mask 'gt' needs the sample's foreground mask"):
        foreground_mask(prob, mode="gt", name="img.png")
    with pytest.raises(PEAInputError, match="TEST.mask 'pred' needs the network's foreground head"):
        foreground_mask(None, mode="pred")


def test_ground_truth_affinities_recover_the_labels(tmp_path):
    """Ground-truth affinities and foreground through Mutex Watershed and merging."""
    test = settings.segment_options(load_config(shipped_config("bbbc039v1")).TEST)
    offsets = offsets_from_shifts(SHIFTS)
    generate_bbbc039(tmp_path, seed=9, n_train=0, n_valid=0, n_test=2)  # full size, 520x696
    for s in bbbc039.load_split(data_cfg(tmp_path), "test"):
        target, _ = affinity_targets(torch.from_numpy(s.labels.astype(np.int64))[None], offsets)
        seg = segment(target[0].numpy(), offsets, mask=s.fg, **test.partition_args())["mutex"]
        assert aggregated_jaccard_index(seg, s.gt) >= 0.99


def tiny_overrides(data_dir, model_dir, out_dir, iterations):
    items = [f"DATA.data_dir={data_dir}", "DATA.scale=1.0", "DATA.padded_size=[96, 112]", "DATA.crop_size=[48, 48]",
             "DATA.num_workers=0", "MODEL.filters=[4, 8, 8, 16, 16]", f"TRAIN.iterations={iterations}",
             "TRAIN.batch_size=2", "TRAIN.lr=0.003", f"TRAIN.valid_every={iterations}", "TRAIN.log_every=1",
             f"TRAIN.save_every={iterations}", f"TRAIN.model_dir={model_dir}", f"TEST.out_dir={out_dir}",
             "TEST.trained_dir=/nonexistent", "TRAIN.device=cpu"]
    return sum((["--set", item] for item in items), [])


def test_training_and_test_inference(tiny_data, tmp_path):
    models, out = tmp_path / "models", tmp_path / "inference"
    args = ["-c=bbbc039v1_demo", "--run", "tiny"] + tiny_overrides(tiny_data, models, out, 12)
    assert train_main(SCRIPTS, args) == 0
    log = (models / "tiny" / "log.txt").read_text().splitlines()
    losses = [float(line.split()[3]) for line in log if line.startswith("iter ")]
    # the last 3 iterations' mean is 0.58 of the first 3's; without the optimiser step 1.16
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert any(line.startswith("valid 12 aji=") for line in log)
    assert (models / "tiny" / "best.ckpt").is_file()

    inf = ["-c=bbbc039v1_demo", "-mn=tiny", "-id=best", "-m=test"] + tiny_overrides(tiny_data, models, out, 12)
    assert inference_main(SCRIPTS, inf) == 0
    tdir = out / "tiny" / "test" / "affs_best"
    names = listed(tiny_data, "test.txt")
    with h5py.File(tdir / "seg.hdf", "r") as f:
        assert [n.decode() for n in f["names"][()]] == names and f["main"].shape == (len(names), 96, 112)
        segs = dict(zip(names, f["main"][()]))
    score = [line.split() for line in (tdir / "score.txt").read_text().splitlines()]
    assert score[0] == ["name", "aji", "dice", "pq", "dq", "sq"]
    assert [row[0] for row in score[1:]] == names + ["mean", "std"]
    gt = {n: np.asarray(Image.open(tiny_data / "label_instance" / f"{n}.png")) for n in names}
    for row in score[1:3]:  # per-image AJI recomputed from the written segmentation
        assert float(row[1]) == pytest.approx(aggregated_jaccard_index(segs[row[0]], gt[row[0]]), abs=1e-4)
    assert float(score[3][1]) == pytest.approx(np.mean([float(r[1]) for r in score[1:3]]), abs=1e-4)
    assert sorted(p.stem for p in (tdir / "panels").glob("*.png")) == sorted(names)


def test_the_authors_input_min_max_three_channels_zero_padding(tiny_data):
    data = load_config(shipped_config("bbbc039v1")).DATA
    data.data_dir = str(tiny_data)
    sample = bbbc039.load_split(data, "test")[0]
    raw = tifffile.imread(tiny_data / "images" / f"{sample.name}.tif").astype(np.float32)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    assert sample.image.shape == raw.shape + (3,)
    for c in range(3):
        np.testing.assert_allclose(sample.image[..., c], expected, rtol=0, atol=1e-6)
    padded, crop = pad_to(sample.image, (128, 144), "zero")
    assert (padded[:16] == 0).all() and (padded[:, :16] == 0).all()
    np.testing.assert_array_equal(padded[crop], sample.image)
    x = to_input(padded, data.normalize, torch.device("cpu"))
    assert x.shape == (1, 3, 128, 144) and torch.equal(x[0, 0], torch.from_numpy(padded[..., 0]))
