"""A missing optional dependency is one line naming the pip extra that brings it, exit 2."""
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from checkpoints import EM_OVERRIDE, project_checkpoint
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pea.cli import main
from pea.errors import PEAInputError
from pea.extras import EXTRAS, require

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_each_optional_module_comes_with_its_extra(module):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = {canonicalize_name(Requirement(line).name) for line in extras[EXTRAS[module]]}
    assert canonicalize_name(module) in listed
    assert require(module) is sys.modules[module]


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_a_missing_module_is_one_line_naming_its_extra(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    with pytest.raises(PEAInputError) as err:
        require(module)
    assert str(err.value).endswith(f'pip install "pea[{EXTRAS[module]}]"') and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("volume")
    with h5py.File(tmp / "raw.h5", "w") as f:
        f["raw"] = np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8)
    project_checkpoint(tmp / "em.ckpt", "ac3ac4_demo", EM_OVERRIDE)
    return tmp


@pytest.mark.parametrize("module, options", [("zarr", []), ("waterz", ["--partitioner", "waterz"])])
def test_pea_predict_on_a_volume_without_an_extra(volume, module, options, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)
    argv = ["predict", "--model", str(volume / "em.ckpt"), "--input", f"{volume}/raw.h5:raw",
            "--output", str(tmp_path / "seg.zarr"), "--device", "cpu", "--workers", "0", *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    # an open progress bar may precede the message on its line
    lines = [line[line.index("pea predict: error:"):] for line in err.splitlines() if "pea predict: error:" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"pea predict: error: {module} cannot be imported")
    assert lines[0].endswith(f'pip install "pea[{EXTRAS[module]}]"')
    assert not list(tmp_path.iterdir())  # nothing half-written
