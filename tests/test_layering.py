"""The shape of the library, checked on its source: the core takes arrays and keyword
arguments (no config or argparse namespace reaches it), no module imports another's private
names, and config.py sits below everything it configures."""
import ast
from pathlib import Path

import pytest

PEA = Path(__file__).resolve().parents[1] / "pea"
CORE = ["affinity", "losses", "ccm", "inference", "windows", "postprocess", "metrics"]


def _tree(name: str) -> ast.Module:
    return ast.parse((PEA / f"{name}.py").read_text())


@pytest.mark.parametrize("module", CORE)
def test_core_functions_take_no_config(module):
    for node in ast.walk(_tree(module)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            names = [a.arg for a in args]
            assert not [n for n in names if n in ("cfg", "args") or n.endswith("_cfg")], f"{module}.{node.name}"
            for a in args:
                annotation = ast.unparse(a.annotation) if a.annotation else ""
                assert "Config" not in annotation and "Namespace" not in annotation, f"{module}.{node.name}({a.arg})"


def test_no_module_imports_a_private_name():
    for path in PEA.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pea"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "_overlap"]
                assert not private, f"{path.relative_to(PEA.parent)} imports {private} from {node.module}"
