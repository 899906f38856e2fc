"""The paper configs against outputs of the authors' code, round 2 (tests/data/official/round2,
README there): the AC3/AC4 training loss term by term, the CVPPP pipeline on the padded image,
and the BBBC039V1 metrics when ground-truth ids have gaps. Only file names and keys are read,
so the tests hold for any fixture made the same way with another seed."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pea import inference, settings
from pea.affinity import affinity_loss, pair_target
from pea.config import load_config, shipped_config
from pea.data.common import Sample
from pea.metrics import evaluate
from pea.postprocess import merge_small_objects, mutex_watershed

DATA = Path(__file__).resolve().parent / "data" / "official" / "round2"
ROOT = Path(__file__).resolve().parents[1]
LEVELS = (2, 4, 8, 16)

pytestmark = pytest.mark.usefixtures("one_thread")


def _paper(name: str):
    return load_config(shipped_config(name))


# ---- AC3/AC4: one training step's loss ------------------------------------------------------


@pytest.fixture(scope="module")
def step():
    return dict(np.load(DATA / "ac3ac4_loss.npz"))


def _embedding(step: dict, key: str) -> torch.Tensor:
    return torch.from_numpy(step[key].astype(np.float32) * np.float32(step["emb_scale"]))


def _unflipped(step: dict) -> torch.Tensor:
    """The second view's embedding in the first view's geometry: per sample, rule r undone as
    transpose (y, x) if r[3], flip y if r[2], flip x if r[1], flip z if r[0], in that order."""
    views = []
    for emb, (z, x, y, swap) in zip(_embedding(step, "emb_ema_net_q").numpy(), step["ema_rules"]):
        emb = np.swapaxes(emb, -1, -2) if swap else emb
        emb = np.flip(emb, -2) if y else emb
        emb = np.flip(emb, -1) if x else emb
        views.append(np.flip(emb, -3) if z else emb)
    return torch.from_numpy(np.ascontiguousarray(np.stack(views)))


def _offsets(step: dict) -> list[tuple[int, ...]]:
    """Channel c links p with p - shift_c along axis_c."""
    pairs = zip(step["full_shifts"], step["full_axes"])
    return [tuple(-int(s) if a == axis else 0 for a in range(3)) for s, axis in pairs]


def _labels(step: dict, key: str) -> torch.Tensor:
    return torch.from_numpy(step[key].astype(np.int64))


def test_3d_loss_of_the_paper_config_matches_the_authors(step):
    cfg = _paper("ac3ac4")
    offsets = _offsets(step)
    assert offsets == settings.offsets(cfg.DATA)[0]
    loss = settings.loss(cfg, *settings.offsets(cfg.DATA))
    out = {"embeddings": [_embedding(step, "emb_full_q")] + [_embedding(step, f"emb_d{f}_q") for f in LEVELS],
           "foreground": None}
    total, parts = loss(out, _labels(step, "labels_fed"), {"embeddings": [_unflipped(step)], "foreground": None})
    epm = sum(float(step[f"loss_epm_d{f}"]) for f in LEVELS)
    assert {k: float(v) for k, v in parts.items()} == pytest.approx(
        {"scm": float(step["loss_scm"]), "ccm": float(step["loss_ccm"]), "epm": epm}, rel=1e-5)
    assert float(total) == pytest.approx(float(step["loss_total"]), rel=1e-5)


def _channel_terms(emb, labels, offsets, lo, outside, other=None) -> list[float]:
    return [float(affinity_loss(emb, labels, [o], tuple(lo.weight_clip), other=other, background=lo.background,
                                normalize=lo.normalize, outside=outside)) for o in offsets]


def test_3d_loss_per_channel_and_level(step):
    """SCM and CCM channel by channel (each over its own voxel pairs), every EPM level and its
    three channels (class weights with the replicate-padded first plane)."""
    lo = _paper("ac3ac4").LOSS
    offsets, labels = _offsets(step), _labels(step, "labels_fed")
    emb = _embedding(step, "emb_full_q")
    for c, o in enumerate(offsets):
        assert pair_target(labels, o, lo.background)[2].numel() == step["norm_full_per_channel"][c]
    np.testing.assert_allclose(_channel_terms(emb, labels, offsets, lo, lo.outside_pairs),
                               step["loss_scm_per_channel"], rtol=1e-5)
    np.testing.assert_allclose(_channel_terms(emb, labels, offsets, lo, lo.outside_pairs, _unflipped(step)),
                               step["loss_ccm_per_channel"], rtol=1e-5)
    nearest = offsets[:3]
    for f in LEVELS:
        level, down = _embedding(step, f"emb_d{f}_q"), _labels(step, f"labels_d{f}")
        terms = _channel_terms(level, down, nearest, lo, lo.epm_outside_pairs)
        np.testing.assert_allclose(terms, step[f"loss_epm_d{f}_per_channel"], rtol=1e-5, err_msg=f"1/{f}")
        assert sum(terms) == pytest.approx(float(step[f"loss_epm_d{f}"]), rel=1e-5)
        counts = [pair_target(down, o, lo.background)[2].numel() for o in nearest]
        np.testing.assert_array_equal(counts, step[f"norm_d{f}_per_channel"])


def test_3d_loss_differs_with_the_project_options(step):
    """The project's per-voxel mean and its pyramid class weights do not give the authors' terms."""
    lo = _paper("ac3ac4").LOSS
    offsets, labels = _offsets(step), _labels(step, "labels_fed")
    emb = _embedding(step, "emb_full_q")
    mean = float(affinity_loss(emb, labels, offsets, background=lo.background, normalize="mean",
                               outside=lo.outside_pairs))
    assert mean < 0.95 * float(step["loss_scm"])
    level, down = _embedding(step, "emb_d2_q"), _labels(step, "labels_d2")
    zero = sum(_channel_terms(level, down, offsets[:3], lo, "zero"))
    assert abs(zero / float(step["loss_epm_d2"]) - 1) > 1e-3


# ---- CVPPP: Mutex Watershed, merging and relabelling on the padded image, cropped last --------


@pytest.fixture(scope="module")
def cvppp():
    return np.load(DATA / "cvppp_padded_mws.npz")


def _images(data) -> list[str]:
    return sorted(m.group(1) for m in map(re.compile(r"(img\d+)_affs$").match, data.files) if m)


def _pipeline(monkeypatch, data, name: str, test_section) -> np.ndarray:
    """`segment_sample` with the config's options, the network's padded affinities replaced
    by the stored ones; the given foreground is the label's."""
    affs, label = data[f"{name}_affs"], data[f"{name}_label"]
    cfg = _paper("cvppp")

    def stored(model, image, offsets, *, padded_size, crop, **kwargs):
        assert tuple(padded_size) == tuple(data["padded_shape"]) and not crop
        return affs, None

    monkeypatch.setattr(inference, "predict_image", stored)
    sample = Sample(name, np.zeros(label.shape + (3,), np.float32), label, label != 0, label.shape, label)
    offsets = settings.offsets(cfg.DATA)[0]
    assert offsets == [tuple(o) for o in data["offsets"].tolist()]
    result = inference.segment_sample(None, sample, offsets, predict_options=settings.predict_options(cfg),
                                      segment_options=settings.segment_options(test_section))
    return result["seg"]["mutex"]


def test_cvppp_paper_config_segments_the_padded_image(monkeypatch, cvppp):
    test = _paper("cvppp").TEST
    assert list(test.strides) == cvppp["strides"].tolist()
    names = _images(cvppp)
    assert names
    for name in names:
        seg = _pipeline(monkeypatch, cvppp, name, test)
        np.testing.assert_array_equal(seg, cvppp[f"{name}_final_crop"], err_msg=name)


def test_cvppp_mutex_watershed_numbering_and_merging(cvppp):
    """The intermediate arrays of the first image: the Mutex Watershed numbered as the authors'
    stack numbered it (the window rule's result depends on it), then the merged ids."""
    test = _paper("cvppp").TEST
    name = _images(cvppp)[0]
    offsets = [tuple(o) for o in cvppp["offsets"].tolist()]
    mask = cvppp[f"{name}_mask_padded"] != 0
    seg = mutex_watershed(cvppp[f"{name}_affs"], offsets, list(test.strides), mask, test.mutex_numbering)
    np.testing.assert_array_equal(seg, cvppp[f"{name}_mws_padded"])
    merged = merge_small_objects(seg, test.small_objects, test.merge_rule)
    np.testing.assert_array_equal(merged, cvppp[f"{name}_merged_padded"])
    other = mutex_watershed(cvppp[f"{name}_affs"], offsets, list(test.strides), mask, "sorted")
    assert not np.array_equal(merge_small_objects(other, test.small_objects, test.merge_rule),
                              cvppp[f"{name}_merged_padded"])


def test_cvppp_crop_first_gives_the_authors_functions_on_the_cropped_image(monkeypatch, cvppp):
    """TEST.crop_padding first (the project's order) with the authors' numbering and merging is
    the authors' functions applied to the cropped affinities, not their result."""
    from dataclasses import replace

    name = _images(cvppp)[0]
    cfg = _paper("cvppp")
    affs, label = cvppp[f"{name}_affs"], cvppp[f"{name}_label"]
    crop = tuple(slice(int(a), int(n) - int(b)) for a, b, n in
                 zip(cvppp["crop_start"], cvppp["crop_stop_from_end"], cvppp["padded_shape"]))
    monkeypatch.setattr(inference, "predict", lambda *a, **k: (affs[(slice(None),) + crop], None))
    sample = Sample(name, np.zeros(label.shape + (3,), np.float32), label, label != 0, label.shape, label)
    opts = replace(settings.segment_options(cfg.TEST), crop_padding="first")
    seg = inference.segment_sample(None, sample, settings.offsets(cfg.DATA)[0],
                                   predict_options=settings.predict_options(cfg), segment_options=opts)["seg"]["mutex"]
    np.testing.assert_array_equal(seg, cvppp[f"{name}_cropfirst_final"])
    assert not np.array_equal(seg, cvppp[f"{name}_final_crop"])


# ---- BBBC039V1: metrics when ground-truth ids have gaps ---------------------------------------


def test_bbbc039v1_metrics_with_gapped_ids():
    data = np.load(DATA / "bbbc039v1_aji_gaps.npz")
    aji_ids = _paper("bbbc039v1").TEST.aji_ids
    cases = sorted(m.group(1) for m in map(re.compile(r"(case\d+)_gt$").match, data.files) if m)
    assert cases
    for case in cases:
        gt, pred = data[f"{case}_gt"], data[f"{case}_pred"]
        got = evaluate(pred, gt, "aji,dice,f1,pq_official", aji_ids=aji_ids)
        expected = {"aji": data[f"{case}_aji"], "dice": data[f"{case}_pixel_f1"], "dq": data[f"{case}_dq"],
                    "sq_official": data[f"{case}_sq"], "pq_official": data[f"{case}_pq"]}
        for key, value in expected.items():
            assert got[key] == pytest.approx(float(value), rel=0, abs=1e-9), f"{case} {key}"
        # the ids present only: what the authors' AJI gives on the ground truth made consecutive
        present = evaluate(pred, gt, "aji", aji_ids="present")["aji"]
        assert present == pytest.approx(float(data[f"{case}_aji_gt_remapped"]), rel=0, abs=1e-9), case
