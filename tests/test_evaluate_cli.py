"""`pea evaluate` and pea.io.read_labels: every file format, folders, --json, and bad input."""
from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

import pea.cli
from pea import metrics as M
from pea.errors import PEAInputError
from pea.io import read_labels


@pytest.fixture
def pea_main(monkeypatch):
    """pea.cli.main with only the `evaluate` sub-command registered (the others belong to other modules)."""
    monkeypatch.setattr(pea.cli, "COMMANDS", {"evaluate": pea.cli.COMMANDS["evaluate"]})
    return lambda *argv: pea.cli.main(["evaluate", *map(str, argv)])


def label_pair(seed: int, shape=(30, 40), n=9):
    rng = np.random.default_rng(seed)
    gt = np.kron(rng.integers(0, n + 1, (shape[0] // 5, shape[1] // 5)), np.ones((5, 5), int))
    pred = np.roll(gt, 2, axis=-1)
    pred[rng.random(shape) < 0.05] = 0
    return pred.astype(np.uint8), gt.astype(np.uint8)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """a and b differ only by a one-to-one relabelling that keeps 0 as 0."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
            and ((pairs[0] == 0) == (pairs[1] == 0)).all())


# ---- read_labels -----------------------------------------------------------------------------


def test_palette_png_gives_indices(tmp_path):
    _, gt = label_pair(0)
    img = Image.fromarray(gt, mode="P")
    img.putpalette(np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8).tobytes())
    img.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_labels(str(tmp_path / "p.png")), gt)


def test_gray_png_8_and_16_bit(tmp_path):
    _, gt = label_pair(1)
    big = gt.astype(np.uint16) * 1000
    cv2.imwrite(str(tmp_path / "g8.png"), gt)
    cv2.imwrite(str(tmp_path / "g16.png"), big)
    np.testing.assert_array_equal(read_labels(str(tmp_path / "g8.png")), gt)
    out = read_labels(str(tmp_path / "g16.png"))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, big)


def test_rgb_png_maps_colours_to_ids(tmp_path):
    _, gt = label_pair(2)
    rng = np.random.default_rng(2)
    colours = rng.integers(1, 256, (gt.max() + 1, 3)).astype(np.uint8)
    colours[0] = 0
    rgb = colours[gt]
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    out = read_labels(str(tmp_path / "c.png"))
    assert same_partition(out, gt)
    assert out.max() == len(np.unique(gt)) - 1  # ids 0..n
    rgba = np.concatenate([rng.integers(1, 256, gt.shape + (3,)).astype(np.uint8),
                           np.where(gt > 0, 255, 0).astype(np.uint8)[..., None]], axis=-1)
    rgba[..., :3] = np.where(gt[..., None] > 0, colours[gt], rgba[..., :3])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert same_partition(read_labels(str(tmp_path / "a.png")), gt)  # transparent = background
    # 16 bits per channel: colours differing only in the low byte stay apart
    rgb16 = np.zeros(gt.shape + (3,), np.uint16)
    rgb16[..., 0] = 256 * 7 + gt.astype(np.uint16)
    rgb16[gt == 0] = 0
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    assert same_partition(read_labels(str(tmp_path / "c16.png")), gt)
    gray_rgb = np.repeat(gt[..., None], 3, axis=-1)
    Image.fromarray(gray_rgb, mode="RGB").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_labels(str(tmp_path / "g.png")), gt)


def test_tiff_npy_h5(tmp_path):
    vol = np.stack([label_pair(s)[1] for s in range(3)]).astype(np.uint32) * 70000
    tifffile.imwrite(tmp_path / "v.tif", vol, photometric="minisblack")
    np.testing.assert_array_equal(read_labels(str(tmp_path / "v.tif")), vol)
    tifffile.imwrite(tmp_path / "planar.tif", vol.astype(np.uint8), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_labels(str(tmp_path / "planar.tif")), vol.astype(np.uint8))
    rgb = np.stack([vol[0] % 256, vol[0] // 256 % 256, vol[0] // 65536 % 256], -1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert same_partition(read_labels(str(tmp_path / "rgb.tif")), vol[0])
    np.save(tmp_path / "v.npy", vol.astype(np.float32) / 70000)
    out = read_labels(str(tmp_path / "v.npy"))
    assert out.dtype.kind == "i"
    np.testing.assert_array_equal(out, vol // 70000)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["grp/main"] = vol
        f["raw"] = vol.astype(np.float32) + 0.5
    np.testing.assert_array_equal(read_labels(f"{tmp_path / 'v.h5'}:grp/main"), vol)
    with h5py.File(tmp_path / "one.hdf", "w") as f:
        f["main"] = vol[0].astype(bool)
    np.testing.assert_array_equal(read_labels(str(tmp_path / "one.hdf")), vol[0] > 0)


@pytest.mark.parametrize("make,spec,msg", [
    (lambda d: (d / "x.png").write_bytes(b"not a png at all"), "x.png", "cannot read"),
    (lambda d: None, "nothing.tif", "no such file"),
    (lambda d: np.save(d / "f.npy", np.full((4, 4), 0.5)), "f.npy", "fractional"),
    (lambda d: np.save(d / "n.npy", -np.ones((4, 4), np.int16)), "n.npy", "negative"),
    (lambda d: np.save(d / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True), "o.npy", "cannot read"),
    (lambda d: np.save(d / "v.npy", np.arange(5)), "v.npy", "2D or 3D"),
    (lambda d: h5py.File(d / "m.h5", "w").create_dataset("main", data=np.zeros((3, 3))), "m.h5:labels",
     "no dataset 'labels'"),
    (lambda d: h5py.File(d / "two.h5", "w").update(a=np.zeros((3, 3)), b=np.zeros((3, 3))), "two.h5", "2 datasets"),
    (lambda d: (d / "x.jpg").write_bytes(b""), "x.jpg", "unsupported"),
])
def test_read_labels_bad_input(tmp_path, make, spec, msg):
    make(tmp_path)
    with pytest.raises(PEAInputError, match=msg) as err:
        read_labels(str(tmp_path / spec))
    assert str(tmp_path / spec.split(":")[0]) in str(err.value) and "\n" not in str(err.value)


# ---- the command -----------------------------------------------------------------------------


def write(path, arr):
    """Write `arr` in the format named by `path`'s extension (h5: dataset 'main')."""
    s = str(path)
    if s.endswith(".png"):
        cv2.imwrite(s, arr)
    elif s.endswith(".tif"):
        tifffile.imwrite(s, arr, photometric="minisblack")
    elif s.endswith(".npy"):
        np.save(s, arr)
    else:
        with h5py.File(s, "w") as f:
            f["main"] = arr
    return s


@pytest.mark.parametrize("ext", [".png", ".tif", ".npy", ".h5"])
def test_single_pair_json(tmp_path, pea_main, capsys, ext):
    pred, gt = label_pair(3)
    p = write(tmp_path / f"pred{ext}", pred)
    g = write(tmp_path / f"gt{ext}", gt)
    if ext == ".h5":
        p, g = p + ":main", g + ":main"
    assert pea_main(p, g, "--json", "--metrics", "sbd,dic,voi") == 0
    out = json.loads(capsys.readouterr().out)
    assert out == M.evaluate(pred, gt, "sbd,dic,voi")
    assert list(out) == ["sbd", "dic", "abs_dic", "voi_split", "voi_merge", "voi"]


def test_aji_ids_flag(tmp_path, pea_main, capsys):
    """--aji-ids range: the AJI over gt ids 1..max, a missing id 1 taking prediction 1."""
    gt = np.zeros((4, 12), np.uint8)
    gt[:, :3], gt[:, 3:6] = 2, 3
    pred = np.zeros_like(gt)
    pred[:, :3], pred[:, 8:] = 1, 2
    p, g = write(tmp_path / "pred.npy", pred), write(tmp_path / "gt.npy", gt)
    for ids in ("present", "range"):
        assert pea_main(p, g, "--json", "--metrics", "aji", "--aji-ids", ids) == 0
        assert json.loads(capsys.readouterr().out) == {"aji": M.aggregated_jaccard_index(pred, gt, ids=ids)}
    assert M.aggregated_jaccard_index(pred, gt, ids="range") != M.aggregated_jaccard_index(pred, gt)


def test_single_pair_all_metrics_text(tmp_path, pea_main, capsys):
    pred, gt = label_pair(4)
    vol_p, vol_g = np.stack([pred, gt, pred]), np.stack([gt, gt, pred])
    assert pea_main(write(tmp_path / "p.tif", vol_p), write(tmp_path / "g.npy", vol_g)) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = M.evaluate(vol_p, vol_g)
    assert [line.split()[0] for line in lines] == list(M.METRIC_KEYS)
    for line in lines:
        key, value = line.split()
        assert float(value) == pytest.approx(expected[key], abs=5e-5)


def test_folders(tmp_path, pea_main, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    rows = {}
    for k in range(3):
        pred, gt = label_pair(10 + k)
        write(tmp_path / "pred" / f"img{k}.tif", pred)  # matched to gt by name without extension
        write(tmp_path / "gt" / f"img{k}.png", gt)
        rows[f"img{k}"] = M.evaluate(pred, gt, "sbd,dic,aji,pq,ap")
    write(tmp_path / "pred" / "extra.npy", pred)
    assert pea_main(tmp_path / "pred", tmp_path / "gt", "--metrics", "sbd,dic,aji,pq,ap", "--json") == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "extra" not in captured.out and "1 file(s)" in captured.err
    assert [r["name"] for r in out["files"]] == list(rows)
    for r in out["files"]:
        assert {k: v for k, v in r.items() if k != "name"} == rows[r["name"]]
    table = np.array([list(v.values()) for v in rows.values()], dtype=float)
    keys = list(next(iter(rows.values())))
    assert out["mean"] == pytest.approx(dict(zip(keys, table.mean(0))))
    assert out["std"] == pytest.approx(dict(zip(keys, table.std(0))))
    assert pea_main(tmp_path / "pred", tmp_path / "gt", "--metrics", "sbd") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["sbd"]
    assert [line.split()[0] for line in lines[1:]] == [*rows, "mean", "std"]
    assert float(lines[-2].split()[1]) == pytest.approx(table[:, 0].mean(), abs=5e-5)


def test_help_documents_selectors(pea_main, capsys):
    with pytest.raises(SystemExit):
        pea_main("--help")
    text = " ".join(capsys.readouterr().out.split())
    for word in ("best_dice", "fg_bg_dice", "dice (foreground pixel F1)", "ap (ap50, ap75", "dic (dic, abs_dic)",
                 "pq (pq, dq, sq)", "voi (voi_split, voi_merge, voi)", "arand", "aji_kumar",
                 "pq_official (pq_official, sq_official", "f1 (object F1 at IoU 0.5, the key dq)"):
        assert word in text


def test_f1_selects_the_figure_printed_as_f1(tmp_path, pea_main, capsys):
    pred, gt = label_pair(3)
    a, b = write(tmp_path / "pred.tif", pred), write(tmp_path / "gt.png", gt)
    assert pea_main(a, b, "--metrics", "f1,aji,aji_kumar", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out == pytest.approx(M.evaluate(pred, gt, "dq,aji,aji_kumar"))
    assert list(out) == ["aji", "aji_kumar", "dq"]


def _bad_cases(d):
    pred, gt = label_pair(5)
    good = write(d / "good.png", gt)
    (d / "garbage.png").write_bytes(b"\x89PNG but not really")
    np.save(d / "frac.npy", pred.astype(float) + 0.25)
    np.save(d / "neg.npy", pred.astype(np.int32) - 3)
    write(d / "small.npy", gt[:10])
    write(d / "vol.h5", gt)
    (d / "pd").mkdir()
    (d / "gd").mkdir()
    write(d / "gd" / "a.png", gt)
    write(d / "gd" / "missing_one.png", gt)
    write(d / "pd" / "a.png", pred)
    return [
        ((d / "small.npy", good), "small.npy", "shape"),
        ((d / "garbage.png", good), "garbage.png", "cannot read"),
        ((d / "frac.npy", good), "frac.npy", "fractional"),
        ((good, d / "neg.npy"), "neg.npy", "negative"),
        ((good, d / "absent.tif"), "absent.tif", "no such file"),
        ((f"{d / 'vol.h5'}:labels", good), "vol.h5", "no dataset 'labels'"),
        ((d / "pd", d / "gd"), "pd", "missing_one"),
        ((d / "pd", good), "pd", "folder"),
        ((good, good, "--metrics", "sbd,nope"), "nope", "unknown metric"),
    ]


def test_bad_input_exit_2_one_line(tmp_path, pea_main, capsys):
    for argv, name, msg in _bad_cases(tmp_path):
        assert pea_main(*argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert name in err and msg in err and "Traceback" not in err, err
        assert err.startswith("pea evaluate: error: ")
