"""AC3/AC4: the reader, EM training targets, the 3D post-processing on ground-truth
affinities, validation, a short 3D training and the inference script."""
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import label as connected

from pea.affinity import EM_OFFSETS, affinity_targets, widen_border
from pea.config import make_config
from pea.data import ac3ac4
from pea.errors import PEAInputError
from pea.metrics import evaluate
from pea.postprocess import fragments_3d, multicut_segment, mutex_watershed, waterz_segment
from pea.synth.em import generate_em, make_em_volume

NO_AUGMENT = {name: 0.0 for name in ("flip", "transpose", "rotate90", "intensity", "elastic", "misalign",
                                     "missing_section", "missing_parts", "motion_blur")}


def _data_cfg(folder, **extra):
    return make_config({"DATA": {"dataset": "ac3ac4", "data_dir": str(folder), "normalize": "unit",
                                 "offsets": [list(o) for o in EM_OFFSETS], "group_size": 3, **extra}}).DATA


def _write(path, data):
    with h5py.File(path, "w") as f:
        f.create_dataset("main", data=data)


def _targets(labels, background="none"):
    """The EM targets (LOSS.background 'none': border affine to nothing)."""
    lab = torch.from_numpy(np.asarray(labels, np.int64))[None]
    target, mask = affinity_targets(lab, EM_OFFSETS, background)
    return target[0].numpy(), mask[0].numpy()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ac3ac4")
    generate_em(folder, seed=2, depth=12, size=48, test_depth=6, object_size=16)
    return folder


# -- reader ----------------------------------------------------------------------------------
def test_splits_shapes_and_values(synth):
    with h5py.File(synth / "AC4_inputs.h5") as f:
        raw = f["main"][()]
    with h5py.File(synth / "AC4_labels.h5") as f:
        ids = f["main"][()]
    cfg = _data_cfg(synth, train_sections=8)
    (train,) = ac3ac4.load_split(cfg, "train")
    (valid,) = ac3ac4.load_split(cfg, "validation")
    (test,) = ac3ac4.load_split(cfg, "ac3")
    assert train.image.shape == (8, 48, 48, 1) and valid.image.shape == (4, 48, 48, 1)
    assert test.image.shape == (6, 48, 48, 1) and test.name == "AC3"
    assert train.image.dtype == np.float32
    np.testing.assert_array_equal(train.image[..., 0], raw[:8].astype(np.float32) / 255)
    np.testing.assert_array_equal(valid.image[..., 0], raw[8:].astype(np.float32) / 255)
    np.testing.assert_array_equal(train.labels, ids[:8])
    np.testing.assert_array_equal(valid.gt, ids[8:])
    assert valid.shape == (4, 48, 48) and valid.fg is None
    assert ac3ac4.VALID_SPLIT == "validation" and ac3ac4.METRICS == ("voi", "arand")


def test_reader_errors_name_the_file_and_dataset(tmp_path):
    cfg = _data_cfg(tmp_path, train_sections=2)
    with pytest.raises(PEAInputError, match="AC4_inputs.h5: no such file"):
        ac3ac4.load_split(cfg, "train")
    _write(tmp_path / "AC4_inputs.h5", np.zeros((4, 16, 16), np.uint8))
    with h5py.File(tmp_path / "AC4_labels.h5", "w") as f:
        f.create_dataset("labels", data=np.ones((4, 16, 16), np.uint32))
    with pytest.raises(PEAInputError, match=r"AC4_labels.h5: no dataset 'main' \(datasets: labels\)"):
        ac3ac4.load_split(cfg, "train")
    _write(tmp_path / "AC4_labels.h5", np.ones((4, 16, 15), np.uint32))
    with pytest.raises(PEAInputError, match=r"AC4_labels.h5: dataset 'main' has shape \(4, 16, 15\)"):
        ac3ac4.load_split(cfg, "train")
    _write(tmp_path / "AC4_labels.h5", np.ones((4, 16, 16), np.float32))
    with pytest.raises(PEAInputError, match="AC4_labels.h5.*must be integers"):
        ac3ac4.load_split(cfg, "train")
    _write(tmp_path / "AC4_labels.h5", np.ones((4, 16, 16), np.uint32))
    with pytest.raises(PEAInputError, match="DATA.train_sections = 4"):
        ac3ac4.load_split(_data_cfg(tmp_path, train_sections=4), "validation")
    with pytest.raises(PEAInputError, match="unknown AC3/AC4 split 'test'"):
        ac3ac4.load_split(cfg, "test")
    _write(tmp_path / "AC4_inputs.h5", np.full((4, 16, 16), 2.0, np.float32))
    with pytest.raises(PEAInputError, match="AC4_inputs.h5.*neither uint8 nor float in"):
        ac3ac4.load_split(cfg, "train")
    (tmp_path / "AC3_inputs.h5").write_text("not hdf5")
    with pytest.raises(PEAInputError, match="AC3_inputs.h5: not a readable HDF5 file"):
        ac3ac4.load_split(cfg, "ac3")


# -- training targets ------------------------------------------------------------------------
def test_em_targets_hand_computed_with_widened_borders(tmp_path):
    """Two objects side by side (x < 4: id 1, x >= 4: id 2) in a (3, 4, 8) volume; widening
    makes x = 3 and x = 4 border, which is affine to nothing, itself included."""
    labels = np.where(np.arange(8) < 4, 1, 2) * np.ones((3, 4, 1), np.uint32)
    crop = ac3ac4.EMCrop(_data_cfg(tmp_path, crop_size=[3, 4, 8], widen_border=True, em_augment=NO_AUGMENT))
    image = np.random.default_rng(0).random((3, 4, 8, 1), dtype=np.float32)
    img, lab = crop(image, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(img, image)
    target, mask = _targets(lab)

    inside = np.array([1, 1, 1, 0, 0, 1, 1, 1], np.float32)  # not border, by x
    x_pairs = np.array([0, 1, 1, 0, 0, 0, 1, 1], np.float32)  # (x - 1, x) in one object, no border
    expect_t = np.zeros((12, 3, 4, 8), np.float32)
    expect_m = np.zeros((12, 3, 4, 8), np.float32)
    # channel, the voxels p whose partner p + o lies inside, the target there (by x); the
    # offsets (-3, 0, 0), (0, -9, 0), (0, 0, -9), (-4, 0, 0), (0, -27, 0), (0, 0, -27) have none
    for c, valid, by_x in [(0, np.s_[1:], inside), (1, np.s_[:, 1:], inside), (2, np.s_[:, :, 1:], x_pairs),
                           (3, np.s_[2:], inside), (4, np.s_[:, 3:], inside), (5, np.s_[:, :, 3:], 0 * inside)]:
        expect_m[c][valid] = 1
        expect_t[c][valid] = np.broadcast_to(by_x, (3, 4, 8))[valid]
    np.testing.assert_array_equal(mask, expect_m)
    np.testing.assert_array_equal(target, expect_t)


def test_without_widening_targets_come_from_the_labels_themselves(tmp_path):
    labels = make_em_volume(np.random.default_rng(0), (4, 32, 32), object_size=12, defects=False)[1]
    crop = ac3ac4.EMCrop(_data_cfg(tmp_path, crop_size=[4, 32, 32], widen_border=False, em_augment=NO_AUGMENT))
    _, lab = crop(np.zeros((4, 32, 32, 1), np.float32), labels, np.random.default_rng(0))
    np.testing.assert_array_equal(_targets(lab)[0], _targets(labels)[0])


def test_widening_the_whole_volume_before_cropping(tmp_path):
    """DATA.widen_on volume (the authors'): the crop's labels are the widened volume's there, so
    a crop's edge voxels see their neighbours outside it; crop (the project's) widens the crop."""
    labels = make_em_volume(np.random.default_rng(4), (3, 40, 40), object_size=8, defects=False)[1]
    sample = ac3ac4.Sample("v", np.zeros(labels.shape + (1,), np.float32), labels, None, labels.shape, labels)

    def crop_labels(**data):
        cfg = make_config({"DATA": {"dataset": "ac3ac4", "crop_size": [3, 24, 24], "normalize": "unit",
                                    "em_augment": NO_AUGMENT, **data}, "TRAIN": {"seed": 3}})
        return ac3ac4.train_dataset(cfg, [sample])[0][1].numpy()

    raw = crop_labels(widen_border=False)
    (y, x), = [(y, x) for y in range(17) for x in range(17) if np.array_equal(labels[:, y:y + 24, x:x + 24], raw)]
    on_volume = crop_labels(widen_border=True, widen_on="volume")
    np.testing.assert_array_equal(on_volume, widen_border(labels)[:, y:y + 24, x:x + 24])
    on_crop = crop_labels(widen_border=True, widen_on="crop")
    np.testing.assert_array_equal(on_crop, widen_border(raw))
    edge = np.ones(raw.shape, bool)
    edge[:, 1:-1, 1:-1] = False
    assert (on_volume != on_crop).any() and not (on_volume != on_crop)[~edge].any()
    np.testing.assert_array_equal(sample.labels, labels)  # the sample itself is left as it was


def test_background_none_equals_unique_border_ids():
    """The 'none' rule is what giving every border voxel an id of its own would teach."""
    labels = widen_border(make_em_volume(np.random.default_rng(3), (4, 32, 32), object_size=10, defects=False)[1])
    unique = labels.astype(np.int64)
    border = unique == 0
    unique[border] = unique.max() + 1 + np.arange(border.sum())
    np.testing.assert_array_equal(_targets(labels, "none")[0], _targets(unique, "same")[0])
    assert (_targets(labels, "same")[0] != _targets(labels, "none")[0]).any()


def test_train_dataset_keeps_image_and_labels_aligned(tmp_path):
    """Every geometric transform on: the image, a function of the ids, still matches them."""
    depth, size = 6, 64
    labels = make_em_volume(np.random.default_rng(1), (depth, size, size), object_size=14, defects=False)[1]
    tone = np.random.default_rng(2).uniform(0.1, 0.9, labels.max() + 1).astype(np.float32)
    sample = ac3ac4.Sample("v", tone[labels][..., None], labels.astype(np.int64), None, labels.shape, labels)
    augment = dict(NO_AUGMENT, flip=1.0, transpose=1.0, rotate90=1.0, elastic=1.0, misalign=1.0)
    cfg = make_config({"DATA": {"dataset": "ac3ac4", "crop_size": [4, 40, 40], "widen_border": True,
                                "normalize": "unit", "em_augment": augment}, "TRAIN": {"seed": 7}})
    dataset = ac3ac4.train_dataset(cfg, [sample])
    for index in range(4):
        x, lab = dataset[index]
        assert x.shape == (1, 4, 40, 40) and lab.shape == (4, 40, 40) and lab.dtype == torch.int64
        image, lab = x[0].numpy() * 0.25 + 0.5, lab.numpy()
        obj = lab > 0  # widened border voxels are background (0)
        assert 0.5 < obj.mean() < 0.95
        lo = ndimage.minimum_filter(lab, size=(1, 5, 5))
        hi = ndimage.maximum_filter(lab, size=(1, 5, 5))
        interior = obj & (lo == hi)  # away from boundaries, where the warp's interpolation mixes ids
        interior[:, :2] = interior[:, -2:] = interior[:, :, :2] = interior[:, :, -2:] = False  # and edges
        np.testing.assert_allclose(image[interior], tone[lab[interior]], atol=1e-4)
    x1, l1 = dataset[3]
    x2, l2 = dataset[3]
    assert torch.equal(x1, x2) and torch.equal(l1, l2)
    assert not torch.equal(dataset[2][0], x1)


# -- post-processing on ground-truth affinities ----------------------------------------------
@pytest.fixture(scope="module")
def em_volume():
    """Every voxel labelled (membranes are drawn in the image, not in the labels)."""
    _, labels = make_em_volume(np.random.default_rng(1), (16, 128, 128), object_size=24)
    return labels.astype(np.int64), _targets(labels)[0]


@pytest.mark.parametrize("method", ["waterz", "lmc", "mutex"])
def test_postprocessing_recovers_the_ground_truth(em_volume, method):
    labels, affs = em_volume
    if method == "waterz":
        seg = waterz_segment(affs, 0.5)
    elif method == "lmc":
        seg = multicut_segment(affs, EM_OFFSETS)
    else:
        seg = mutex_watershed(affs, EM_OFFSETS, [1, 10, 10])
    assert seg.shape == labels.shape
    scores = evaluate(seg, labels, metrics=["voi", "arand"])
    assert scores["voi"] <= 0.05 and scores["arand"] <= 0.01, scores


def test_fragments_cover_membranes_without_crossing_objects(em_volume):
    """Affinities of a perfect network trained on widened borders: 0 on every border voxel.
    Fragments must still cover every voxel, and never join two objects' interiors."""
    labels, _ = em_volume
    widened = widen_border(labels)
    affs = _targets(widened)[0]
    frags = fragments_3d(affs)
    assert frags.shape == labels.shape and frags.min() == 1
    # object voxels with an affine nearest neighbour (a lone voxel, all of whose neighbours are
    # border or other objects, joins a fragment beside it)
    linked = np.zeros(labels.shape, bool)
    for axis in range(3):
        edge = affs[axis] > 0.5  # links p and p - 1 along the axis
        linked |= edge
        linked |= np.roll(edge, -1, axis=axis)
    linked &= widened > 0
    pairs = np.unique(np.stack([frags[linked], widened[linked]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # one object per fragment
    # waterz then makes exactly one segment of each connected piece of an object's interior
    seg = waterz_segment(affs, 0.5)
    pieces = connected(np.where(linked, widened, 0), background=0, connectivity=1)
    joined = np.unique(np.stack([seg[linked], pieces[linked]]), axis=1)
    assert joined.shape[1] == len(np.unique(joined[0])) == len(np.unique(joined[1])) == pieces.max()
    assert linked.sum() > 0.7 * (widened > 0).sum()


# -- training and the inference script -------------------------------------------------------
def _tiny_config(tmp_path, data_dir, **train):
    return make_config({
        "NAME": "tiny",
        "DATA": {"dataset": "ac3ac4", "data_dir": str(data_dir), "train_sections": 8, "crop_size": [4, 32, 32],
                 "offsets": [list(o) for o in EM_OFFSETS], "group_size": 3, "widen_border": True, "normalize": "unit",
                 "em_augment": dict(NO_AUGMENT, flip=0.5, rotate90=0.5), "num_workers": 0},
        "MODEL": {"backbone": "superhuman", "in_channels": 1, "emb_dim": 8, "filters": [4, 4, 6, 6, 8],
                  "fg_head": False},
        "LOSS": {"epm_groups": [3, 2, 1, 1], "background": "none", "ccm_blank": "anywhere"},
        "TRAIN": {"batch_size": 2, "lr": 0.01, "log_every": 5, "select_metric": "voi", "valid_partitioner": "waterz",
                  "model_dir": str(tmp_path / "models"), **train},
        "TEST": {"window": [4, 32, 32], "overlap": [2, 8, 8], "strides": [1, 10, 10],
                 "out_dir": str(tmp_path / "inference"), "trained_dir": str(tmp_path / "trained")},
    })


def test_validation_as_the_paper_config_scores_waterz_by_the_median_and_the_multicut(tmp_path, synth):
    """TRAIN.valid_waterz_scoring median and valid_extra_partitioners [lmc] (ac3ac4.yaml): the
    validator's scores are waterz's (merges by the median affinity) under the metrics' names
    and the multicut's as lmc_*, each as segmenting and scoring the volume directly gives."""
    from pea import settings
    from pea.config import load_config, shipped_config
    from pea.inference import predict, segment
    from pea.metrics import evaluate

    paper = load_config(shipped_config("ac3ac4")).TRAIN
    cfg = _tiny_config(tmp_path, synth, valid_extra_partitioners=paper.valid_extra_partitioners,
                       valid_waterz_scoring=paper.valid_waterz_scoring)
    cfg.TEST.fragments = "official"
    offsets = settings.offsets(cfg.DATA)[0]
    validator = settings.validator(cfg, ac3ac4, offsets)
    assert validator.segment_options.methods == ("waterz", "lmc")
    model = settings.seeded_model(cfg.MODEL, 1).eval()
    scores = validator(model, torch.device("cpu"))
    (sample,) = ac3ac4.load_split(cfg.DATA, "validation")
    affs, _ = predict(model, sample.image, offsets, **asdict(settings.predict_options(cfg)), progress=False)
    for scoring in ("median", "mean"):
        segs = segment(affs, offsets, ["waterz", "lmc"], fragments="official", waterz_scoring=scoring)
        expected = {**evaluate(segs["waterz"], sample.gt, "voi,arand"),
                    **{f"lmc_{k}": v for k, v in evaluate(segs["lmc"], sample.gt, "voi,arand").items()}}
        if scoring == "median":
            assert scores == pytest.approx(expected, abs=1e-9)
        else:
            assert scores["voi"] != pytest.approx(expected["voi"], abs=1e-6)


@pytest.mark.slow
def test_short_training_lowers_the_loss(tmp_path, synth):
    from pea.settings import trainer as build_trainer

    cfg = _tiny_config(tmp_path, synth, iterations=40, valid_every=40, save_every=40)
    trainer = build_trainer(cfg, tmp_path / "run", device=torch.device("cpu"))
    best = trainer.run()
    losses = [float(line.split()[3]) for line in (tmp_path / "run" / "log.txt").read_text().splitlines()
              if line.startswith("iter ")]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    assert best["iteration"] == 40 and set(best["scores"]) == {"voi_split", "voi_merge", "voi", "arand"}
    assert (tmp_path / "run" / "best.ckpt").is_file()


def test_checkpoints_keep_the_authors_names(tmp_path):
    """Every save writes model-%06d.ckpt and last.ckpt; TRAIN.keep_checkpoints prunes the oldest."""
    from pea.settings import trainer as build_trainer

    for keep, expected in [(None, [1, 2, 3, 1000]), (2, [3, 1000])]:
        trainer = build_trainer(_tiny_config(tmp_path, tmp_path, keep_checkpoints=keep), tmp_path / f"run{keep}")
        for iteration in (1, 2, 3, 1000):
            trainer.iteration = iteration
            trainer._save_periodic()
        names = sorted(p.name for p in (tmp_path / f"run{keep}").glob("*.ckpt"))
        assert names == ["last.ckpt"] + [f"model-{i:06d}.ckpt" for i in expected]
        ckpt = torch.load(tmp_path / f"run{keep}" / "model-001000.ckpt", weights_only=True)
        assert ckpt["iteration"] == 1000 and {"model_weights", "optimizer", "config"} <= set(ckpt)


def test_inference_script_writes_each_method(tmp_path, synth, capsys):
    import yaml

    from pea.inference_cli import volume_inference_main as inference_main
    from pea.checkpoint import save_checkpoint
    from pea.settings import trainer as build_trainer

    cfg = _tiny_config(tmp_path, synth, iterations=1)
    save_checkpoint(tmp_path / "models" / "tiny" / "init.ckpt", build_trainer(cfg, tmp_path / "x").state())
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    argv = [f"-c={path}", "-mn=tiny", "-id=init", "-m=ac3", "-waterz", "-mutex", "--device=cpu"]
    assert inference_main(tmp_path, argv) == 0
    out = tmp_path / "inference" / "tiny" / "ac3" / "affs_init"
    lines = capsys.readouterr().out.strip().splitlines()
    for method, line in zip(("waterz", "lmc", "mutex"), lines[-3:]):  # multicut runs unless -lmc
        assert line.startswith(f"{method}: VOI_split=") and "VOI_merge=" in line and "ARAND=" in line
        with h5py.File(out / f"seg_{method}.hdf") as f:
            assert f["main"].shape == (6, 48, 48)
        assert (out / f"score_{method}.txt").read_text().startswith("name voi_split voi_merge voi arand")
    assert (out / "scores.txt").read_text().splitlines() == lines[-3:]
    # -lmc switches the multicut off; ac4 with -ts takes AC4's last sections; -pm scores pixels
    argv = [f"-c={path}", "-mn=tiny", "-id=init", "-m=ac4", "-ts=4", "-lmc", "-waterz", "-pm", "--device=cpu"]
    assert inference_main(tmp_path, argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("waterz: ") and lines[-1].startswith("pixel AC4: MSE=")
    out = tmp_path / "inference" / "tiny" / "ac4" / "affs_init"
    assert not (out / "seg_lmc.hdf").exists()
    with h5py.File(out / "seg_waterz.hdf") as f:
        assert f["main"].shape == (4, 48, 48)
    # -mutex is a flag of its own, never "-m utex"; nothing to run is an error
    assert inference_main(tmp_path, argv[:4] + ["-lmc"]) == 2
