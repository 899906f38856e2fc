"""The config: one schema of Keys (default, check, description), each reader's own keys,
`_base_` files, checked choices, the shipped configs (in the package, found by name), configs
stored by earlier versions, and the paper configs stating their pipeline."""
import ast
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image
from readme_example import readme_example

import pea.config as config
from pea import schema as S
from pea.settings import offsets as resolve_offsets
from pea.checkpoint import load_checkpoint
from pea.config import (CONFIG_DIR, DEFAULTS, RENAMED, RETIRED, SCHEMA, find_config, load_config, make_config,
                        migrate_stored, readers, register_reader, reported_metrics, shipped_config,
                        shipped_configs)
from pea.config_checks import check_metrics
from pea.data import READERS, get_reader
from pea.errors import PEAInputError
from pea.schema import Key
from pea.scripts import train_main
from pea.synth.cvppp import make_plant

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [CONFIG_DIR / f"{name}.yaml" for name in shipped_configs()]
STORED = sorted((ROOT / "tests" / "data" / "stored_configs").glob("*.yaml"))


def _every_key():
    yield from S.flatten(SCHEMA).items()
    for name, keys in readers().items():
        yield from (((name, "DATA", k), key) for k, key in keys.items())


def test_every_key_has_a_default_a_check_and_a_doc_and_its_default_passes():
    keys = list(_every_key())
    assert len(keys) > 100  # the shared schema and three readers
    for path, key in keys:
        assert isinstance(key, Key) and callable(key.check), path
        assert isinstance(key.doc, str) and key.doc.strip() and "\n" not in key.doc, path
        assert key.check(key.default) is None, (path, key.default, key.check(key.default))
    assert DEFAULTS == S.defaults(SCHEMA)  # derived, never written twice
    from pea.models import DEFAULTS as MODEL_DEFAULTS

    assert MODEL_DEFAULTS == {k: key.default for k, key in SCHEMA["MODEL"].items()}


def test_reader_keys_join_only_their_own_data_set():
    assert set(readers()) == set(READERS) == {"cvppp", "bbbc039v1", "ac3ac4", "folder", "volumes"}
    assert "valid_list" in make_config({"DATA": {"dataset": "cvppp"}}).DATA
    assert "train_sections" in make_config({"DATA": {"dataset": "ac3ac4"}}).DATA
    with pytest.raises(PEAInputError, match="unknown key 'DATA.train_sections'"):
        make_config({"DATA": {"dataset": "cvppp", "train_sections": 80}})
    with pytest.raises(PEAInputError, match="unknown key 'DATA.valid_list'"):
        make_config({"DATA": {"dataset": "ac3ac4", "valid_list": "x.txt"}})
    for name, keys in readers().items():  # a reader's keys are its own, never a shared key of another meaning
        assert not set(keys) & set(SCHEMA["DATA"]), name
        assert keys == get_reader(name).DATA_KEYS
    with pytest.raises(ValueError, match="scale"):
        register_reader("clash", {"scale": Key(1.0, S.number(0), "a shared key again")})
    assert "clash" not in readers()


def test_unknown_data_set_is_one_line_naming_the_known_ones():
    for value in ("cvpp", 5, ["cvppp"]):
        with pytest.raises(PEAInputError) as err:
            make_config({"DATA": {"dataset": value}}, "my.yaml")
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"my.yaml: DATA.dataset = {value!r}")
        assert message.endswith("ac3ac4, bbbc039v1, cvppp, folder, volumes")


def test_config_imports_no_layer_above_it():
    tree = ast.parse((ROOT / "pea" / "config.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.startswith("pea")} == {"pea", "pea.errors", "pea.schema"}
    assert {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "pea"
            for a in n.names} == {"schema"}
    # importing it (and the package) loads neither the readers nor torch
    code = "import sys, pea.config; print(sorted(m for m in sys.modules if m in ('torch', 'pea.data', 'pea.metrics')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shared_schema_names_no_data_set():
    flat = repr(DEFAULTS).lower()
    assert not any(name in flat for name in ("cvppp", "bbbc", "ac3", "ac4"))


@pytest.mark.parametrize("key, value, allowed", [("LOSS.background", "maybe", "same, none"),
                                                 ("TEST.mask", "always", "gt, pred, none"),
                                                 ("TRAIN.valid_partitioner", "watershed", "waterz, lmc, mutex"),
                                                 ("TEST.partitioners", ["mutex", "graph"], "waterz, lmc, mutex"),
                                                 ("TEST.partitioners", [], "waterz, lmc, mutex"),
                                                 ("TEST.merge_rule", "nearest", "contact, window"),
                                                 ("TEST.fragments", "paper", "project, official"),
                                                 ("TRAIN.lr_schedule", "step", "constant, cosine, poly"),
                                                 ("TEST.crop_padding", "never", "first, last"),
                                                 ("TEST.mutex_numbering", "c", "sorted, fortran"),
                                                 ("TEST.aji_ids", "all", "present, range"),
                                                 ("LOSS.normalize", "sum", "mean, width, pairs"),
                                                 ("LOSS.epm_outside_pairs", "two", "None, ignore, one, zero"),
                                                 ("TRAIN.valid_waterz_scoring", "max", "mean, median"),
                                                 ("TRAIN.valid_extra_partitioners", ["graph"], "waterz, lmc, mutex")])
def test_choices_are_checked(key, value, allowed):
    section, name = key.split(".")
    with pytest.raises(PEAInputError, match=f"{key}.*{allowed}"):
        make_config({section: {name: value}})


def test_learning_rate_schedule_keys():
    train = make_config({}).TRAIN
    assert (train.lr_schedule, train.warmup, train.lr_power, train.lr_final) == ("constant", 0, 0.9, 0.0)
    ok = make_config({"TRAIN": {"lr_schedule": "poly", "warmup": 500, "lr_power": 2, "lr_final": 1}}).TRAIN
    assert (ok.lr_schedule, ok.warmup, ok.lr_power, ok.lr_final) == ("poly", 500, 2, 1)
    for name, value in [("warmup", -1), ("warmup", 2.5), ("lr_power", 0), ("lr_final", 1.5), ("lr_final", -0.1)]:
        with pytest.raises(PEAInputError, match=f"TRAIN.{name} = {value!r}: expected"):
            make_config({"TRAIN": {name: value}})


def test_base_files_state_only_what_differs(tmp_path):
    (tmp_path / "base.yaml").write_text("NAME: base\nDATA:\n  dataset: cvppp\n  shifts: [1, 3]\n"
                                        "TRAIN:\n  lr: 0.5\n  batch_size: 4\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nNAME: child\nTRAIN:\n  lr: 0.25\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.NAME, cfg.TRAIN.lr, cfg.TRAIN.batch_size, cfg.DATA.shifts) == ("child", 0.25, 4, [1, 3])
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(PEAInputError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("_base_: nowhere.yaml\n")
    with pytest.raises(PEAInputError, match="nowhere.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_mapping_value_is_replaced_whole_by_a_base_file_and_by_set(tmp_path):
    (tmp_path / "base.yaml").write_text("DATA:\n  dataset: ac3ac4\n  em_augment: {flip: 0.5, elastic: 0.3}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nDATA:\n  em_augment: {rotate: 1.0}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.DATA.em_augment == {"rotate": 1.0}
    assert config.merge(cfg.to_dict(), {"DATA": {"em_augment": {"flip": 1.0}}})["DATA"]["em_augment"] == {"flip": 1.0}


def test_resnet_configs_extend_cvppp():
    base = load_config(shipped_config("cvppp")).to_dict()
    for backbone in ("resnet50", "resnet101"):
        cfg = load_config(shipped_config(f"cvppp_{backbone}")).to_dict()
        assert cfg["MODEL"]["backbone"] == backbone and cfg["NAME"] == f"cvppp_{backbone}"
        for section in ("DATA", "LOSS", "TRAIN", "TEST"):
            assert cfg[section] == base[section]


def test_explicit_offsets_need_a_group_size():
    data = make_config({"DATA": {"offsets": [[-1, 0, 0], [0, -1, 0]]}}).DATA
    with pytest.raises(PEAInputError, match="DATA.group_size"):
        resolve_offsets(data)
    data.group_size = 2
    assert resolve_offsets(data) == ([(-1, 0, 0), (0, -1, 0)], 2)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_states_its_pipeline(path):
    cfg = check_metrics(load_config(path))
    assert cfg.NAME == path.stem and cfg.DATA.dataset in READERS and cfg.DATA.normalize
    offsets, _ = resolve_offsets(cfg.DATA)
    assert cfg.TRAIN.select_metric and cfg.TRAIN.valid_partitioner
    if "mutex" in cfg.TEST.partitioners + [cfg.TRAIN.valid_partitioner]:
        assert len(cfg.TEST.strides) == len(offsets[0])
    # sliding windows where the config says so, with one size per axis of the offsets
    if cfg.TEST.window:
        assert len(cfg.TEST.window) == len(cfg.TEST.overlap) == len(offsets[0])


def test_paper_configs_select_the_authors_post_processing():
    test = make_config({}).TEST  # the shared defaults are the project's variants
    assert (test.merge_rule, test.fragments, test.metrics, test.window_blend) == ("contact", "project", None, "ramp")
    for path in [p for p in CONFIGS if not p.stem.endswith(("_project", "_demo"))]:  # the paper configs
        cfg = load_config(path)
        if cfg.TEST.small_objects:  # 2D: the authors' window rule with (threshold, window) passes
            assert cfg.TEST.merge_rule == "window", path.name
        if cfg.TEST.window:  # 3D: the authors' fragments, Gaussian windows, multicut by default
            assert (cfg.TEST.fragments, cfg.TEST.window_blend, cfg.TEST.partitioners) == (
                "official", "gaussian", ["lmc"]), path.name
        assert cfg.MODEL.backbone.endswith("_official") or "resnet" in path.name, path.name


# the paper configs' values of the keys of issue 18 (the authors' code) and the project's
PAPER_VALUES = {
    "cvppp": {("TEST", "crop_padding"): "last", ("TEST", "mutex_numbering"): "fortran"},
    "bbbc039v1": {("TEST", "mutex_numbering"): "fortran", ("TEST", "aji_ids"): "range"},
    "ac3ac4": {("LOSS", "normalize"): "pairs", ("LOSS", "outside_pairs"): "zero",
               ("LOSS", "epm_outside_pairs"): "foreground", ("DATA", "widen_on"): "volume",
               ("TRAIN", "valid_waterz_scoring"): "median", ("TRAIN", "valid_extra_partitioners"): ["lmc"]},
}
PROJECT_VALUES = {("TEST", "crop_padding"): "first", ("TEST", "mutex_numbering"): "sorted",
                  ("TEST", "aji_ids"): "present", ("LOSS", "epm_outside_pairs"): None,
                  ("TRAIN", "valid_waterz_scoring"): "mean", ("TRAIN", "valid_extra_partitioners"): []}


@pytest.mark.parametrize("name", PAPER_VALUES)
def test_paper_configs_state_the_authors_order_numbering_scale_and_scores(name):
    """Each paper config states the authors' value; its _project config (and so its demo) and
    the shared defaults keep the project's."""
    paper, project = load_config(shipped_config(name)), load_config(shipped_config(f"{name}_project"))
    for (section, key), value in PAPER_VALUES[name].items():
        assert paper[section][key] == value, f"{name}: {section}.{key}"
    for (section, key), value in PROJECT_VALUES.items():
        assert project[section][key] == value and make_config({})[section][key] == value, f"{section}.{key}"
    if name == "bbbc039v1":  # rotation, rescale, elastic warp fill with zeros; the project's reflect
        assert all(paper.DATA.em_augment_params[t]["border"] == "zero" for t in ("rotate", "rescale", "elastic"))
    if name == "ac3ac4":
        assert (project.LOSS.normalize, project.DATA.widen_on) == ("mean", "crop")


@pytest.mark.parametrize("rule, passes, ok", [("contact", [5, 20], True), ("window", [[5, 5], [20, 11]], True),
                                              ("window", [5, 20], False), ("contact", [[5, 5]], False),
                                              ("window", [[5, 5], 20], False), ("window", [], True)])
def test_small_objects_match_the_merge_rule(rule, passes, ok):
    override = {"TEST": {"merge_rule": rule, "small_objects": passes}}
    if ok:
        assert make_config(override).TEST.small_objects == passes
    else:
        with pytest.raises(PEAInputError, match=f"TEST.small_objects.*merge_rule '{rule}'"):
            make_config(override)


@pytest.mark.parametrize("passes", [None, 5, "5, 20", [-5], [2.5], [[5, 5, 5]], [[5, "x"]], [True]])
def test_small_objects_are_sizes_or_pairs_of_counts(passes):
    for rule in ("contact", "window"):
        with pytest.raises(PEAInputError, match=r"TEST.small_objects = .*: expected a list"):
            make_config({"TEST": {"merge_rule": rule, "small_objects": passes}})


def test_metrics_key_is_typed_here_and_checked_against_the_metrics_at_the_edge():
    reader = get_reader("bbbc039v1")
    assert reported_metrics(make_config({"DATA": {"dataset": "bbbc039v1"}}), reader) == list(reader.METRICS)
    cfg = make_config({"DATA": {"dataset": "bbbc039v1"}, "TEST": {"metrics": ["aji", "dice", "f1", "pq_official"]}})
    assert reported_metrics(cfg, reader) == ["aji", "dice", "f1", "pq_official"]
    assert check_metrics(cfg) is cfg
    for value in ("aji", [1], ["aji", None]):  # a list of names, or null
        with pytest.raises(PEAInputError, match="TEST.metrics = .*expected a list"):
            make_config({"TEST": {"metrics": value}})
    unknown = make_config({"TEST": {"metrics": ["aij"]}})  # a name: checked against pea.metrics ...
    with pytest.raises(PEAInputError, match="my.yaml: TEST.metrics.*unknown metric 'aij'"):
        check_metrics(unknown, "my.yaml")  # ... by pea.config_checks, at the edge
    not_reported = make_config({"DATA": {"dataset": "cvppp"}, "TRAIN": {"select_metric": "aji"}})
    with pytest.raises(PEAInputError, match="TRAIN.select_metric = 'aji': expected one of sbd,"):
        check_metrics(not_reported)


def test_entry_points_check_the_metrics(tmp_path, capsys):
    script = ROOT / "scripts_cvppp"
    assert train_main(script, ["-c=cvppp_demo", "--set", "TRAIN.select_metric=aji"]) == 2
    assert "cvppp_demo.yaml: TRAIN.select_metric = 'aji'" in capsys.readouterr().err


# -- shipped configs, found by name -------------------------------------------------------------
def test_shipped_configs_live_in_the_package():
    assert CONFIG_DIR == ROOT / "pea" / "configs" and len(CONFIGS) == 11
    assert not list(ROOT.glob("scripts_*/config/*.yaml"))  # the entry points' folders are for users' own
    assert shipped_config("cvppp") == CONFIG_DIR / "cvppp.yaml"
    with pytest.raises(PEAInputError) as err:
        shipped_config("cvpp")
    assert "\n" not in str(err.value) and all(name in str(err.value) for name in shipped_configs())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'pea = ["configs/*.yaml"]' in pyproject  # package data: installed with pea


def test_a_name_is_looked_for_in_the_users_folder_first(tmp_path):
    users = tmp_path / "config"
    users.mkdir()
    assert find_config("cvppp", users) == CONFIG_DIR / "cvppp.yaml"
    assert find_config("elsewhere/mine.yml", users) == Path("elsewhere/mine.yml")
    (users / "cvppp.yaml").write_text("_base_: cvppp_project.yaml\nNAME: mine\n")  # a shipped base
    (users / "cvppp_project.yaml").write_text("_base_: cvppp_demo.yaml\nNAME: mine_project\n")
    assert find_config("cvppp", users) == users / "cvppp.yaml"
    cfg, demo = load_config(find_config("cvppp", users)), load_config(shipped_config("cvppp_demo"))
    # the user's cvppp_project.yaml (beside) is the base, not the shipped one; it extends the shipped demo
    assert cfg.NAME == "mine" and cfg.TRAIN.iterations == demo.TRAIN.iterations
    with pytest.raises(PEAInputError, match="no such shipped config"):
        find_config("nothing", users)


def test_entry_points_find_shipped_and_users_configs(tmp_path, capsys):
    script = tmp_path / "scripts_mine"
    (script / "config").mkdir(parents=True)
    assert train_main(script, ["-c=nothing"]) == 2
    err = capsys.readouterr().err
    assert f"{script / 'config' / 'nothing.yaml'} not found; config 'nothing': no such shipped config (shipped: ac3ac4," in err
    (script / "config" / "mine.yaml").write_text("_base_: cvppp_demo.yaml\nTRAIN:\n  select_metric: aji\n")
    assert train_main(script, ["-c=mine"]) == 2  # read from the script's config/ folder, then checked
    assert "mine.yaml: TRAIN.select_metric = 'aji'" in capsys.readouterr().err


# -- configs stored by earlier versions ----------------------------------------------------------
def _stored(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_stored_configs_of_earlier_versions_load(path):
    stored = _stored(path)
    cfg = make_config(migrate_stored(stored), path.name)
    assert cfg.MODEL == stored["MODEL"] and cfg.NAME == stored["NAME"]
    renamed = {new for (section, old), (new, _) in RENAMED.items() if old in stored[section]}  # tested below
    kept = 0
    for section in ("DATA", "LOSS", "TRAIN", "TEST"):  # every value that still means the same is kept
        for key, value in stored[section].items():
            retired = RETIRED.get((section, key))
            if key in cfg[section] and (section, key) not in renamed and not (retired and retired(value)):
                assert cfg[section][key] == value, (section, key)
                kept += 1
    assert kept > 40
    offsets, group = resolve_offsets(cfg.DATA)  # and it states a pipeline that runs
    assert group == (len(offsets[0]) if stored["DATA"]["offsets"] else 2)


def test_old_names_are_mapped_only_in_stored_configs(tmp_path):
    volume, image = (_stored(STORED[0].parent / f"a122cd1_{n}.yaml") for n in ("ac3ac4", "cvppp"))
    assert "mws_strides" in volume["TEST"] and volume["TRAIN"]["amp"] is False and "group_size" not in volume["DATA"]
    vol = make_config(migrate_stored(volume))
    assert vol.TEST.strides == volume["TEST"]["mws_strides"] != volume["TEST"]["strides"]  # volumes read mws_strides
    assert vol.DATA.group_size == len(volume["DATA"]["offsets"][0]) and vol.TRAIN.amp == "off"
    assert vol.DATA.train_sections == volume["DATA"]["train_sections"] and "valid_list" not in vol.DATA
    img = make_config(migrate_stored(image))
    assert img.TEST.strides == image["TEST"]["strides"]  # images read strides; mws_strides was unused
    assert img.DATA.valid_list == image["DATA"]["valid_list"] and "train_sections" not in img.DATA
    with pytest.raises(PEAInputError, match="unknown key 'DATA.valid_list'"):
        make_config(volume)  # not migrated: a YAML file or --set with an old key is an error
    old = tmp_path / "old.yaml"
    old.write_text("TEST:\n  mws_strides: [1, 10, 10]\n")
    with pytest.raises(PEAInputError, match="unknown key 'TEST.mws_strides'"):
        load_config(old)
    ckpt = tmp_path / "old.ckpt"  # a checkpoint holding such a config: migrated when read
    torch.save({"model_weights": {}, "config": volume, "iteration": 1}, ckpt)
    assert make_config(load_checkpoint(ckpt)["config"]) == vol


@pytest.mark.slow
def test_installed_package_runs_outside_the_source_tree(tmp_path):
    """A wheel of the package's sources (built with this Python's setuptools, no download, no
    build folder of the checkout reused), installed into a new virtual environment that reuses
    this Python's packages, used from outside the repository."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "pea", src / "pea", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], cwd=tmp_path, check=True, capture_output=True)
    env = tmp_path / "venv"
    venv.create(env, system_site_packages=True, with_pip=True)
    python, pea_cmd = env / "bin" / "python", env / "bin" / "pea"
    wheel = next((tmp_path / "dist").glob("pea-*.whl"))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], cwd=tmp_path, check=True,
                   capture_output=True)
    out = subprocess.run([pea_cmd, "--help"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "predict" in out.stdout
    code = ("import pea; from pea.config import shipped_config, load_config; "
            "print(pea.__file__); print(load_config(shipped_config('cvppp')).NAME)")
    out = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    where, name = out.stdout.split()
    assert name == "cvppp" and Path(where).is_relative_to(env) and not Path(where).is_relative_to(ROOT)
    # pea predict --config cvppp on an authors'-format checkpoint, and the README's Python example
    image, gt = make_plant(np.random.default_rng(2), 70, 64, 6)
    Image.fromarray(image).save(tmp_path / "plant.png")
    np.save(tmp_path / "gt.npy", gt)
    ckpt = ROOT / "tests" / "data" / "official" / "resunet2d_small.ckpt"
    subprocess.run([pea_cmd, "predict", "--model", str(ckpt), "--config", "cvppp", "--input", "plant.png",
                    "--output", "out", "--device", "cpu"], cwd=tmp_path, capture_output=True, check=True)
    assert tifffile.imread(tmp_path / "out" / "plant.tif").shape == (70, 64)
    example = readme_example().replace('"models/cvppp_demo/best.ckpt"', f"{str(ckpt)!r}, config='cvppp'")
    prelude = ("import numpy as np; from PIL import Image; "
               "image = np.asarray(Image.open('plant.png')); gt = np.load('gt.npy')")
    code = f"{prelude}\n{example}\nprint(pea.__file__, labels.shape, sorted(scores))"
    out = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    where, shape = out.stdout.split(maxsplit=1)
    assert Path(where).is_relative_to(env) and shape.startswith("(70, 64) ['aji'")
