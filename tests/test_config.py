"""The config: shared schema, each reader's own keys, `_base_` files, checked choices, and
the paper configs stating their pipeline."""
from pathlib import Path

import pytest

from pea.settings import offsets as resolve_offsets
from pea.config import DEFAULTS, load_config, make_config
from pea.data import READERS, get_reader
from pea.errors import PEAInputError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("scripts_*/config/*.yaml"))


def test_reader_keys_join_only_their_own_data_set():
    assert "valid_list" in make_config({"DATA": {"dataset": "cvppp"}}).DATA
    assert "train_sections" in make_config({"DATA": {"dataset": "ac3ac4"}}).DATA
    with pytest.raises(PEAInputError, match="unknown key 'DATA.train_sections'"):
        make_config({"DATA": {"dataset": "cvppp", "train_sections": 80}})
    with pytest.raises(PEAInputError, match="unknown key 'DATA.valid_list'"):
        make_config({"DATA": {"dataset": "ac3ac4", "valid_list": "x.txt"}})
    for name in READERS:  # a reader's keys are its own, never a shared key of another meaning
        assert not set(get_reader(name).DATA_DEFAULTS) & set(DEFAULTS["DATA"])


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


def test_resnet_configs_extend_cvppp():
    folder = ROOT / "scripts_cvppp" / "config"
    base = load_config(folder / "cvppp.yaml").to_dict()
    for backbone in ("resnet50", "resnet101"):
        cfg = load_config(folder / f"cvppp_{backbone}.yaml").to_dict()
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
    cfg = load_config(path)
    assert cfg.NAME and cfg.DATA.dataset in READERS and cfg.DATA.normalize
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
    folder = next(ROOT.glob(f"scripts_*/config/{name}.yaml")).parent
    paper, project = load_config(folder / f"{name}.yaml"), load_config(folder / f"{name}_project.yaml")
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
                                              ("window", [[5, 5, 5]], False), ("window", [], True)])
def test_small_objects_match_the_merge_rule(rule, passes, ok):
    override = {"TEST": {"merge_rule": rule, "small_objects": passes}}
    if ok:
        assert make_config(override).TEST.small_objects == passes
    else:
        with pytest.raises(PEAInputError, match=f"TEST.small_objects.*merge_rule '{rule}'"):
            make_config(override)


def test_metrics_key_selects_what_is_scored():
    from pea.config import reported_metrics

    reader = get_reader("bbbc039v1")
    assert reported_metrics(make_config({"DATA": {"dataset": "bbbc039v1"}}), reader) == list(reader.METRICS)
    cfg = make_config({"DATA": {"dataset": "bbbc039v1"}, "TEST": {"metrics": ["aji", "dice", "f1", "pq_official"]}})
    assert reported_metrics(cfg, reader) == ["aji", "dice", "f1", "pq_official"]
    with pytest.raises(PEAInputError, match="TEST.metrics.*unknown metric 'aij'"):
        make_config({"TEST": {"metrics": ["aij"]}})
