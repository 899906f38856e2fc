"""Training on one's own data: the plain 2D folder and the volume list readers, `pea check-data`
(statistics and one line per problem), presets, the best.ckpt rules, and `pea train` then
`pea predict` on look-alike nuclei and EM volumes."""
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
import yaml
import zarr
from PIL import Image

from pea import settings
from pea.cli import main
from pea.config import load_config, make_config, shipped_config
from pea.data import folder, volume_list
from pea.datacheck import check
from pea.errors import PEAInputError
from pea.metrics import aggregated_jaccard_index
from pea.presets import NAMES, SMALL, preset_dict
from pea.synth.bbbc039 import generate_bbbc039
from pea.synth.em import make_em_volume
from pea.train import Validator

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY_2D = ["DATA.crop_size=[48, 48]", "MODEL.filters=[4, 8, 8, 16, 16]", "TRAIN.batch_size=2", "DATA.num_workers=0",
           "TRAIN.lr=0.003"]
TINY_3D = ["DATA.crop_size=[4, 32, 32]", "MODEL.filters=[4, 4, 6, 6, 8]", "TEST.window=[4, 32, 32]",
           "TEST.overlap=[2, 8, 8]", "DATA.num_workers=0"]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    """Look-alike nuclei in the plain layout: 6 training images, val/ with 2, test/ with 2."""
    root = tmp_path_factory.mktemp("nuclei")
    generate_bbbc039(root, seed=4, n_train=6, n_valid=2, n_test=2, height=96, width=112, layout="plain")
    return root


@pytest.fixture(scope="module")
def no_val(tmp_path_factory, nuclei):
    """The same training images without val/."""
    root = tmp_path_factory.mktemp("no_val")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
        for f in (nuclei / sub).iterdir():
            (root / sub / f.name).write_bytes(f.read_bytes())
    return root


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key.replace("__", "/"), data=value)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Two training volumes of different sizes (h5, labels in a group), a validation TIFF
    stack, a YAML list of them (relative paths) and a new volume to segment."""
    root = tmp_path_factory.mktemp("volumes")
    for i, shape in enumerate([(10, 48, 48), (8, 40, 56)]):
        raw, ids = make_em_volume(np.random.default_rng(i), shape, object_size=16)
        _h5(root / f"vol{i}.h5", raw=raw, seg__ids=ids)
    raw, ids = make_em_volume(np.random.default_rng(5), (6, 40, 40), object_size=16)
    tifffile.imwrite(root / "val_raw.tif", raw)
    tifffile.imwrite(root / "val_labels.tif", ids)
    (root / "list.yaml").write_text(yaml.safe_dump({
        "train": [{"raw": f"vol{i}.h5:raw", "labels": f"vol{i}.h5:seg/ids"} for i in range(2)],
        "val": [{"raw": "val_raw.tif", "labels": "val_labels.tif"}]}))
    tifffile.imwrite(root / "new.tif", make_em_volume(np.random.default_rng(9), (6, 40, 48), object_size=16)[0])
    return root


def _data(root, **extra):
    return make_config({"DATA": {"dataset": "folder", "data_dir": str(root), **extra}}).DATA


# -- readers ---------------------------------------------------------------------------------
def test_folder_reader_matches_by_stem_and_draws_the_split(nuclei, no_val):
    stems = sorted(f.stem for f in (no_val / "images").iterdir())
    found, problems = folder.splits(_data(no_val))
    train, valid = [p.stem for p in found["train"]], [p.stem for p in found["validation"]]
    assert not problems and len(valid) == 1 and sorted(train + valid) == stems  # round(0.1 x 6) = 1: at least one
    drawn = {tuple(p.stem for p in folder.splits(_data(no_val, split_seed=s))[0]["validation"]) for s in range(8)}
    assert len(drawn) > 1  # the seed draws
    half = folder.splits(_data(no_val, val_fraction=0.5))[0]
    assert len(half["validation"]) == 3 and len(half["train"]) == 3
    with_val = folder.splits(_data(nuclei))[0]
    assert [p.stem for p in with_val["validation"]] == sorted(f.stem for f in (nuclei / "val" / "images").iterdir())
    assert [p.stem for p in with_val["train"]] == stems
    sample = folder.load_split(_data(nuclei, percentiles=[1, 99]), "validation")[0]
    raw = tifffile.imread(nuclei / "val" / "images" / f"{sample.name}.tif").astype(np.float64)
    lo, hi = np.percentile(raw / 65535, [1, 99])
    np.testing.assert_allclose(sample.image[..., 0], np.clip((raw / 65535 - lo) / (hi - lo), 0, 1), atol=1e-5)
    gt = np.asarray(Image.open(nuclei / "val" / "labels" / f"{sample.name}.png"))
    assert len(np.unique(np.stack([gt.ravel(), sample.gt.ravel()]), axis=1).T) == len(np.unique(gt))  # same objects
    assert sample.gt.max() == len(np.unique(gt)) - 1 and np.array_equal(sample.fg, gt > 0)


def test_folder_reader_reads_the_look_alike_as_the_bbbc039_reader(nuclei, tmp_path):
    """The same images in both layouts: the same arrays (main.py and pea train differ only in
    the order of the training images, the BBBC039V1 metadata's against sorted stems)."""
    from pea.data import bbbc039

    generate_bbbc039(tmp_path, seed=4, n_train=6, n_valid=2, n_test=2, height=96, width=112)
    theirs = make_config({"DATA": {"dataset": "bbbc039v1", "data_dir": str(tmp_path), "normalize": "percentile",
                                   "percentiles": [1.0, 99.8], "scale": 0.5}}).DATA
    ours = _data(nuclei, percentiles=[1.0, 99.8], scale=0.5)
    for split in ("train", "validation"):
        a = {s.name: s for s in bbbc039.load_split(theirs, split)}
        b = {s.name: s for s in folder.load_split(ours, split)}
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_allclose(a[name].image, b[name].image, atol=1e-6)
            np.testing.assert_array_equal(a[name].labels, b[name].labels)
            np.testing.assert_array_equal(a[name].fg, b[name].fg)


def test_folder_reader_takes_rgb_and_multichannel_images(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 24), np.uint16)
    labels[2:9, 3:10], labels[12:18, 5:20] = 7, 3
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    five = rng.integers(0, 255, (5, 20, 24), dtype=np.uint8)  # planar, as microscopes write them
    tifffile.imwrite(tmp_path / "images" / "a.tif", five)
    Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(tmp_path / "images" / "b.png")
    for stem in "ab":
        Image.fromarray(labels).save(tmp_path / "labels" / f"{stem}.png")
    report = check(make_config({"DATA": {"dataset": "folder", "data_dir": str(tmp_path)}}))
    assert not report.problems and report.channels == 5
    (a,) = [s for split in ("train", "validation") for s in folder.load_split(_data(tmp_path, channels=5), split)
            if s.name == "a"]
    np.testing.assert_allclose(a.image, np.moveaxis(five, 0, -1) / 255, atol=1e-6)
    rgb = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "images" / "b.png")
    report = check(make_config({"DATA": {"dataset": "folder", "data_dir": str(tmp_path)}}))
    assert any("5 channels, but" in p and "b.png: 3" in p for p in report.problems)
    # two channels read as grey and alpha, unless DATA.channels says 2 (then the network takes 2)
    from pea.train_cli import with_channels

    tifffile.imwrite(tmp_path / "images" / "a.tif", five[:2])
    Image.fromarray(rgb[..., 0]).save(tmp_path / "images" / "b.png")
    assert check(make_config({"DATA": {"dataset": "folder", "data_dir": str(tmp_path)}})).channels == 1
    (two,) = [s for split in ("train", "validation") for s in folder.load_split(_data(tmp_path, channels=2), split)
              if s.name == "a"]
    np.testing.assert_allclose(two.image, np.moveaxis(five[:2], 0, -1) / 255, atol=1e-6)
    cfg = make_config({"DATA": {"dataset": "folder", "data_dir": str(tmp_path), "channels": 2}})
    with_channels(cfg, 1, ["DATA.channels=2"])
    assert cfg.MODEL.in_channels == cfg.DATA.channels == 2


def test_volume_list_reader_splits_volumes_and_sections(volumes):
    listed = yaml.safe_load((volumes / "list.yaml").read_text())
    absolute = {split: [{k: str(volumes / v) for k, v in item.items()} for item in items]
                for split, items in listed.items()}
    data = make_config({"DATA": {"dataset": "volumes", **absolute}}).DATA
    train = volume_list.load_split(data, "train")
    (valid,) = volume_list.load_split(data, "validation")
    assert [s.image.shape for s in train] == [(10, 48, 48, 1), (8, 40, 56, 1)]
    with h5py.File(volumes / "vol1.h5") as f:
        raw, ids = f["raw"][()], f["seg/ids"][()]
    np.testing.assert_array_equal(train[1].image[..., 0], raw.astype(np.float32) / 255)
    pairs = np.unique(np.stack([ids.ravel(), train[1].labels.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(ids)) == len(np.unique(train[1].labels))  # the same objects
    assert valid.image.shape == (6, 40, 40, 1) and valid.name == "val_raw"
    # one volume: its last val_sections validate (default 10%, at least one)
    one = make_config({"DATA": {"dataset": "volumes", "train": absolute["train"][:1], "val": []}}).DATA
    assert volume_list.load_split(one, "train")[0].image.shape[0] == 9
    assert volume_list.load_split(one, "validation")[0].image.shape[0] == 1
    one.val_sections = 4
    np.testing.assert_array_equal(volume_list.load_split(one, "validation")[0].image[..., 0],
                                  h5py.File(volumes / "vol0.h5")["raw"][6:].astype(np.float32) / 255)
    one.val_sections = 10
    with pytest.raises(PEAInputError, match="10 sections, 10 of them would validate"):
        volume_list.load_split(one, "train")
    assert volume_list.volume_spec("a/b.zarr:raw/s0") == "a/b.zarr/raw/s0"
    assert volume_list.volume_spec("a/b.h5:raw") == "a/b.h5:raw"


# -- pea check-data --------------------------------------------------------------------------
def _square_folder(root):
    """Three images of 30x40: 3 objects (two touching), 1 object, 2 objects; known sizes."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    a, b, c = (np.zeros((30, 40), np.uint8) for _ in range(3))
    a[2:12, 2:12], a[2:12, 12:17], a[20:25, 30:38] = 1, 2, 5  # 100, 50, 40 px; 1 and 2 touch
    b[5:25, 5:15] = 9  # 200 px
    c[3:8, 3:8], c[20:28, 20:30] = 4, 6  # 25, 80 px
    for stem, labels in (("a", a), ("b", b), ("c", c)):
        Image.fromarray(labels).save(root / "labels" / f"{stem}.png")
        Image.fromarray((labels > 0).astype(np.uint8) * 200 + 20).save(root / "images" / f"{stem}.png")
    return a, b, c


def test_check_data_counts_objects_sizes_background_and_touching(tmp_path, capsys):
    labels = _square_folder(tmp_path / "d")
    assert main(["check-data", "--data", str(tmp_path / "d"), "--sheet", str(tmp_path / "sheet.png")]) == 0
    out = capsys.readouterr().out
    background = 100 * sum((x == 0).sum() for x in labels) / sum(x.size for x in labels)
    assert "2 train, 1 validate" in out and "sizes: 30x40 .. 30x40" in out
    assert "objects per image: 1 .. 3 (median 2)" in out and "object sizes: 25 .. 200 (median 65) px" in out
    assert f"background: {background:.1f}% of the pixels" in out
    assert "touching objects: 33% of the objects touch another (in 1 of 3 images)" in out
    assert "channels: 3 image(s) grey" in out and "no problems found" in out
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape == (256, 3 * 256, 3) and sheet[..., 0].max() > 0


def _bad_folder(root, case):
    """A folder with one problem of the kind `case` names."""
    a = _square_folder(root)[0]
    if case == "image without labels":
        (root / "labels" / "b.png").unlink()
    elif case == "labels without image":
        (root / "images" / "b.png").rename(root / "c.txt")
    elif case == "shape mismatch":
        Image.fromarray(a[:, :35]).save(root / "labels" / "b.png")
    elif case == "float labels":
        tifffile.imwrite(root / "labels" / "b.tif", a.astype(np.float32) / 2)
        (root / "labels" / "b.png").unlink()
    elif case == "binary mask":
        Image.fromarray((a > 0).astype(np.uint8) * 255).save(root / "labels" / "b.png")
    elif case == "empty labels":
        Image.fromarray(np.zeros_like(a)).save(root / "labels" / "b.png")
    elif case == "unreadable image":
        (root / "images" / "b.png").write_bytes(b"not a png")
    elif case == "two files of one stem":
        tifffile.imwrite(root / "images" / "b.tif", a)


BAD_2D = {  # case -> what its one line says
    "image without labels": r"images/b\.png: no labels \(no .*labels/b\.\*\)",
    "labels without image": r"labels/b\.png: no image \(no .*images/b\.\*\)",
    "shape mismatch": r"labels/b\.png: shape \(30, 35\) differs from the image .*images/b\.png \(30, 40\)",
    "float labels": r"labels/b\.tif has fractional values .*labels must be integers",
    "binary mask": r"labels/b\.png: one id for 2 separate blobs: a binary mask.*skimage\.measure\.label",
    "empty labels": r"labels/b\.png: no objects \(every pixel is 0\)",
    "unreadable image": r"images/b\.png: cannot read image",
    "two files of one stem": r"images/b\.tif and b\.png: two files of one stem",
}


@pytest.mark.parametrize("case", list(BAD_2D))
def test_every_bad_2d_case_is_one_line_and_train_writes_nothing(tmp_path, capsys, case):
    _bad_folder(tmp_path / "d", case)
    assert main(["check-data", "--data", str(tmp_path / "d"), "--sheet", str(tmp_path / "s.png")]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1, problems
    assert re.search(BAD_2D[case], problems[0]), problems[0]
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d"), "--preset", "nuclei-small", "--out", str(run)]) == 2
    assert problems[0] in capsys.readouterr().err and not run.exists()


def test_bad_volumes_are_one_line_each(volumes, tmp_path, capsys):
    _h5(tmp_path / "v.h5", raw=np.zeros((6, 20, 20), np.uint8), labels=np.ones((6, 20, 19), np.uint32),
        mask=(np.arange(6 * 20 * 20).reshape(6, 20, 20) % 7 == 0))
    cases = {
        ("v.h5:raw", "v.h5:labels"): r"v\.h5:labels: shape \(6, 20, 19\) differs from the raw .*v\.h5:raw \(6, 20, 20\)",
        ("v.h5:raw", "v.h5:nope"): r"v\.h5:nope: name one dataset as .*v\.h5:DATASET \(datasets: labels, mask, raw\)",
        ("v.h5:raw", "v.h5:mask"): r"v\.h5:mask: one id for \d+ separate blobs: a binary mask",
    }
    for (raw, labels), expected in cases.items():
        argv = ["--data", str(tmp_path / raw), "--labels", str(tmp_path / labels)]
        assert main(["check-data", *argv, "--sheet", str(tmp_path / "s.png")]) == 2
        problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("problem: ")]
        assert len(problems) == 1 and re.search(expected, problems[0]), problems
        assert main(["train", *argv, "--preset", "em-small", "--out", str(tmp_path / "run")]) == 2
        assert problems[0] in capsys.readouterr().err and not (tmp_path / "run").exists()
    # a training volume smaller than the preset's crop
    assert main(["check-data", "--data", str(volumes / "list.yaml"), "--preset", "em-small",
                 "--sheet", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "vol0.h5:raw: volume of 10x48x48, smaller than the training crop DATA.crop_size [8, 64, 64]" in err


# -- presets ---------------------------------------------------------------------------------
def _shipped(name):
    return load_config(shipped_config(name))


def test_presets_start_from_the_project_configs_and_the_demos_sizes():
    for name, (preset, demo, keys) in SMALL.items():
        small, base, expected = preset_dict(name), preset_dict(preset), _shipped(demo)
        for key in keys:
            section, item = key.split(".")
            assert small[section][item] == expected[section][item], (name, key)
        assert settings.offsets(small["DATA"]) == settings.offsets(base["DATA"])
    nuclei, project = preset_dict("nuclei"), _shipped("bbbc039v1_project")
    assert nuclei["MODEL"]["backbone"] == project.MODEL.backbone == "resunet"
    assert nuclei["DATA"]["percentiles"] == project.DATA.percentiles and nuclei["TEST"]["mask"] == "pred"
    assert preset_dict("leaves")["TEST"]["mask"] == "pred" and preset_dict("leaves")["MODEL"]["fg_head"] is True
    assert all(preset_dict(n)["TRAIN"]["select_rule"] == "auto" for n in NAMES)
    for paper in ("cvppp", "bbbc039v1", "ac3ac4", "cvppp_demo", "bbbc039v1_demo", "ac3ac4_demo"):
        assert _shipped(paper).TRAIN.select_rule == "best"  # the authors' rule, and the demos' numbers
    assert make_config({}).TRAIN.select_rule == "auto"  # the project's default


def test_a_yaml_path_works_as_preset_and_unknown_names_are_one_line(nuclei, tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(f"_base_: {shipped_config('cvppp_demo')}\nTRAIN:\n  lr: 0.002\n")
    assert main(["check-data", "--data", str(nuclei), "--preset", str(path), "--sheet", str(tmp_path / "s.png")]) == 0
    assert "left out: valid_list" in capsys.readouterr().err
    assert main(["train", "--data", str(nuclei), "--preset", "leafs", "--out", str(tmp_path / "r")]) == 2
    assert "--preset leafs: neither a preset (nuclei, leaves, em, nuclei-small" in capsys.readouterr().err
    assert main(["train", "--data", str(nuclei), "--preset", "em", "--out", str(tmp_path / "r")]) == 2
    assert "--preset em trains 3D networks" in capsys.readouterr().err and not (tmp_path / "r").exists()
    argv = ["train", "--data", str(nuclei), "--preset", "nuclei-small", "--out", str(tmp_path / "r")]
    assert main([*argv, "--set", "TRAIN.select_metric=voi"]) == 2  # not reported for 2D: refused at once
    assert "TRAIN.select_metric" in capsys.readouterr().err and not (tmp_path / "r").exists()


# -- best.ckpt -------------------------------------------------------------------------------
class Scripted(Validator):
    """A validator whose select_metric scores follow `script` (one per evaluation)."""

    def __call__(self, model, device, panel_dir=None):
        return {"aji": self.script.pop(0)}


@pytest.mark.parametrize("rule, expected", [
    ({"rule": "best"}, 2),  # the one score 0.75
    ({"rule": "smoothed", "window": 3}, 4),  # means of up to 3: .58 .665 .64 .68 .67 .673
    ({"rule": "smoothed", "window": 2}, 5),  # means of up to 2: .58 .665 .67 .645 .71 .66
    ({"rule": "last"}, 6),
    ({"rule": "auto", "min_pixels": 65, "window": 2}, 6),  # 64 validation pixels: last
    ({"rule": "auto", "min_pixels": 64, "window": 2}, 5),  # 64 pixels are enough: smoothed
])
def test_best_checkpoint_follows_the_rule(tmp_path, rule, expected):
    from pea.data.common import Sample
    from pea.losses import PEALoss
    from pea.models import build_model
    from pea.train import Every, Trainer

    validator = Scripted([Sample("x", np.zeros((8, 8, 1)), shape=(8, 8))], [(0, -1)], ["aji"], "aji", **rule)
    validator.script = [0.58, 0.75, 0.59, 0.70, 0.72, 0.60]
    model = build_model({"backbone": "resunet", "in_channels": 1, "emb_dim": 4, "filters": [4, 4, 4, 4, 4]})
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 2:9, 2:9] = 1
    trainer = Trainer(model, PEALoss([(0, -1), (-1, 0)], 2, ccm=False, epm=False),
                      torch.optim.SGD(model.parameters(), lr=0.01), [(torch.randn(2, 1, 16, 16), labels)],
                      run_dir=tmp_path, iterations=6, validator=validator, every=Every(log=1, valid=1, save=6))
    best = trainer.run()
    assert best["iteration"] == expected
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["iteration"] == expected
    log = (tmp_path / "log.txt").read_text()
    assert f"best.ckpt: iteration {expected}, rule" in log
    assert f"# done: best.ckpt is iteration {expected}, rule {rule['rule'] if rule['rule'] != 'auto' else ''}" in log


# -- pea train, then pea predict -------------------------------------------------------------
def _valid_aji(log):
    return [float(line.split("aji=")[1].split()[0]) for line in log.splitlines() if line.startswith("valid ")]


def test_train_on_a_folder_without_val_then_predict(no_val, nuclei, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(no_val), "--preset", "nuclei-small", "--out", str(run), "--iterations", "4",
            "--device", "cpu", "--val-fraction", "0.34"] + sets(TINY_2D)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2D images, 4 train, 2 validate (drawn: val_fraction 0.34" in out and "best.ckpt: iteration 4" in out
    split = yaml.safe_load((run / "split.yaml").read_text())
    found = folder.splits(_data(no_val, val_fraction=0.34))[0]
    assert split == {k: [p.stem for p in v] for k, v in found.items()}
    log = (run / "log.txt").read_text()
    assert len(_valid_aji(log)) == 1 and "rule last: the latest evaluation (auto:" in log
    assert sorted(p.name for p in (run / "panels" / "iter_000004").iterdir()) == sorted(
        f"{s}.png" for s in split["validation"])
    assert {"best.ckpt", "last.ckpt", "config.yaml", "data.png", "log.txt"} <= {p.name for p in run.iterdir()}
    assert (run / "tensorboard").is_dir()
    ckpt = torch.load(run / "best.ckpt", weights_only=True)
    assert ckpt["config"]["DATA"]["dataset"] == "folder" and ckpt["config"]["MODEL"]["in_channels"] == 1
    # pea predict on best.ckpt (nothing else): the validation images score as the log says
    inputs = tmp_path / "in"
    inputs.mkdir()
    for stem in split["validation"]:
        (inputs / f"{stem}.tif").write_bytes((no_val / "images" / f"{stem}.tif").read_bytes())
    assert main(["predict", "--model", str(run / "best.ckpt"), "--input", str(inputs), "--output",
                 str(tmp_path / "seg"), "--device", "cpu"]) == 0
    ajis = [aggregated_jaccard_index(tifffile.imread(tmp_path / "seg" / f"{s}.tif"),
                                     np.asarray(Image.open(no_val / "labels" / f"{s}.png"))) for s in split["validation"]]
    assert np.mean(ajis) == pytest.approx(_valid_aji(log)[-1], abs=1e-4)
    # new images (the test split) are segmented at their size
    assert main(["predict", "--model", str(run / "best.ckpt"), "--input", str(nuclei / "test" / "images"),
                 "--output", str(tmp_path / "test"), "--device", "cpu"]) == 0
    for f in (nuclei / "test" / "images").iterdir():
        assert tifffile.imread(tmp_path / "test" / f.name).shape == (96, 112)


@pytest.mark.slow
def test_train_on_a_folder_with_val_resumes_and_refuses_to_overwrite(nuclei, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(nuclei), "--preset", "nuclei-small", "--out", str(run), "--device", "cpu",
            "--set", "TRAIN.valid_every=2"] + sets(TINY_2D)
    assert main(argv + ["--iterations", "2"]) == 0
    assert "6 train, 2 validate (val/)" in capsys.readouterr().out
    assert main(argv + ["--iterations", "4"]) == 2
    assert "already holds checkpoints: pass --resume" in capsys.readouterr().err
    assert main(argv + ["--iterations", "4", "--resume"]) == 0
    log = (run / "log.txt").read_text()
    assert len(_valid_aji(log)) == 2 and torch.load(run / "last.ckpt", weights_only=True)["iteration"] == 4


def test_train_on_a_list_of_volumes_then_predict_a_new_volume(volumes, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(volumes / "list.yaml"), "--preset", "em-small", "--out", str(run),
            "--iterations", "3", "--device", "cpu"] + sets(TINY_3D)
    assert main(argv) == 0
    assert "3D volumes: 2 train, 1 validate (val: list)" in capsys.readouterr().out
    log = (run / "log.txt").read_text()
    assert any(line.startswith("valid 3 voi_split=") and "arand=" in line for line in log.splitlines())
    ckpt = torch.load(run / "best.ckpt", weights_only=True)
    assert ckpt["config"]["DATA"]["train"][1]["raw"] == f"{volumes / 'vol1.h5'}:raw"
    assert (run / "panels" / "iter_000003" / "val_raw.png").is_file()
    out = tmp_path / "seg.zarr"
    assert main(["predict", "--model", str(run / "best.ckpt"), "--input", str(volumes / "new.tif"), "--output",
                 str(out), "--partitioner", "waterz", "--workers", "0", "--device", "cpu"]) == 0
    seg = zarr.open_group(str(out), mode="r")["labels/segmentation/0"][...]
    assert seg.shape == (6, 40, 48) and seg.max() >= 1


@pytest.mark.slow
def test_train_on_one_volume_validates_its_last_sections(volumes, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", f"{volumes / 'vol0.h5'}:raw", "--labels", f"{volumes / 'vol0.h5'}:seg/ids",
            "--val-sections", "3", "--preset", "em-small", "--out", str(run), "--iterations", "2",
            "--device", "cpu"] + sets(TINY_3D)
    assert main(argv) == 0
    assert "1 train, 1 validate (the last 3 sections of each)" in capsys.readouterr().out
    assert "# best.ckpt: rule last on voi (auto: 6912 validation pixels" in (run / "log.txt").read_text()
