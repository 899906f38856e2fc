"""The inference scripts' command lines: the authors' flags with their meanings, outputs in
affs_<id>/, and no flag read as another."""
from pathlib import Path

import h5py
import pytest

from pea.config import load_config, shipped_config
from pea.inference_cli import _apply_image_flags, image_inference_main, image_parser, volume_parser
from pea.synth.cvppp import generate_cvppp

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
BASE = ["-c=x", "-mn=m", "-id=i"]


def test_volume_flags_have_the_authors_meanings():
    args = volume_parser().parse_args(BASE + ["-m=ac3", "-mutex"])
    assert args.mode == "ac3" and args.mutex and args.lmc and not args.waterz  # never "-m utex"
    args = volume_parser().parse_args(BASE + ["-m=ac4", "-ts=30", "-lmc", "-waterz", "-pm", "-sw"])
    assert (args.test_split, args.lmc, args.waterz, args.pixel_metric, args.show) == (30, False, True, True, True)
    for unknown in (["-m=ac3", "-mu"], ["-m=ac3", "--wat"], ["-m=ac3", "-sd=3"]):
        with pytest.raises(SystemExit) as err:
            volume_parser().parse_args(BASE + unknown)
        assert err.value.code == 2


def test_image_flags_have_the_authors_meanings():
    args = image_parser().parse_args(BASE + ["-m=test"])
    assert (args.show, args.if_sbd, args.show_num, args.save) == (True, True, 4, False)  # panels, SBD on
    args = image_parser().parse_args(BASE + ["-m=validation", "-s", "-sw", "-sbd", "-se", "-ne", "-sn=2",
                                             "-sd=7", "-nb=8", "-sf=1,3"])
    assert (args.save, args.show, args.if_sbd, args.show_embedding, args.norm_embedding) == (
        True, False, False, True, True)
    cfg = load_config(shipped_config("cvppp"))
    _apply_image_flags(cfg, args)
    assert (cfg.TEST.strides, cfg.DATA.neighbor, cfg.DATA.shifts) == ([7, 7], 8, [1, 3])
    args = image_parser().parse_args(BASE + ["-m=test", "--partitioner", "mutex,waterz"])
    assert args.mode == "test" and args.partitioner == ["mutex", "waterz"]
    for bad in ("mutex,mutex", "watershed", ""):
        with pytest.raises(SystemExit):
            image_parser().parse_args(BASE + ["-m=test", "--partitioner", bad])


def test_flags_change_the_run(tmp_path):
    """An authors' checkpoint; -nb 8 -sf 1,3 (8 channels), -sbd (no SBD), -se -ne (embedding panels)."""
    data, out = tmp_path / "cvppp", tmp_path / "inference"
    generate_cvppp(data, seed=3, n_train=2, n_test=1, n_valid=1, height=80, width=72, min_leaves=4, max_leaves=6)
    sets = sum((["--set", s] for s in [f"DATA.data_dir={data}", "DATA.padded_size=[80, 80]", f"TEST.out_dir={out}",
                                       "TEST.trained_dir=/nonexistent", "TRAIN.device=cpu"]), [])
    argv = ["-c=cvppp_demo", "-mn=official", f"-id={OFFICIAL / 'resunet2d_small.ckpt'}", "-m=validation", "-s"]
    assert image_inference_main(ROOT / "scripts_cvppp", argv + ["-nb=8", "-sf=1,3", "-sbd", "-se", "-ne"] + sets) == 0
    folder = out / "official" / "validation" / "affs_resunet2d_small"
    with h5py.File(folder / "affs.hdf") as f:
        assert f["main"].shape[:2] == (1, 8)
    assert "sbd" not in (folder / "score.txt").read_text().split("\n")[0].split()
    assert len(list((folder / "panels").glob("*.png"))) == 1
    assert image_inference_main(ROOT / "scripts_cvppp", argv + ["-sn=99"] + sets) != 0  # no channel -99
