"""fxq must run without the deprecated torch.ao package: no file of the library imports it."""
import ast

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_DIRS = ("fxq", "passes", "patterns")


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            # torch.ao.x used through `import torch`
            if isinstance(node.value.value, ast.Name) and node.value.value.id == "torch" and node.value.attr == "ao":
                yield "torch.ao"


def test_library_never_imports_torch_ao():
    offenders = []
    files = [p for d in LIBRARY_DIRS for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 10  # the scan really looked at the library
    for path in files:
        for module in _imported_modules(path):
            if module == "torch.ao" or module.startswith(("torch.ao.", "torch.quantization")):
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert offenders == []


def test_library_never_names_torch_ao():
    """Not even in comments or docstrings: the library says "PyTorch AO" where it compares itself with it, so a
    search for the module name finds only real uses (tests and tools)."""
    files = [p for d in LIBRARY_DIRS for p in (ROOT / d).rglob("*.py")]
    named = [f"{path.relative_to(ROOT)}:{number}" for path in files
             for number, line in enumerate(path.read_text().splitlines(), 1) if "torch.ao" in line or "torchao" in line]
    assert named == []


def test_scanner_catches_an_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nx = torch.ao.quantization\nfrom torch.ao.nn import quantized\n")
    assert set(_imported_modules(bad)) >= {"torch.ao", "torch.ao.nn"}


def test_every_library_package_is_installed_by_pyproject():
    """A non-editable install only ships the packages pyproject lists: a forgotten one breaks `pip install .`."""
    tomllib = pytest.importorskip("tomllib")

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("fxq",) + p.parent.relative_to(ROOT / "fxq").parts) for p in (ROOT / "fxq").rglob("__init__.py")}
    found |= {"fxq.passes", "fxq.patterns"}
    assert found == listed
