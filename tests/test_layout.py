"""The layout's rules (DESIGN.md, issue 15), checked on the source: nothing below the public API imports it, no two
fxq modules import each other, and the root of fxq/ holds only the API and subpackages."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fxq": ROOT / "fxq", "fxq.passes": ROOT / "passes", "fxq.patterns": ROOT / "patterns"}
API = "fxq.api"
ALLOWED_TO_IMPORT_API = ("fxq", "fxq.api", "fxq.cli")  # the public face and the command line sit on top


def _module_files() -> dict:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            modules[name] = path
    return modules


MODULES = _module_files()


def _imports(name: str, path: Path) -> set:
    """The fxq modules ``name`` imports anywhere in its source (late imports inside functions too)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n not in ALLOWED_TO_IMPORT_API
                                        and not n.startswith("fxq.cli.")))
def test_nothing_below_the_api_imports_it(name):
    # `import fxq` / `from fxq import prepare_fx` count: fxq/__init__.py imports the API
    offending = sorted(m for m in GRAPH[name] if m in (API, "fxq"))
    assert not offending, (f"{name} imports {offending}: modules below the public API call the flows in "
                           f"fxq.passes.flows (or the pipeline) instead")


def test_no_two_fxq_modules_import_each_other():
    pairs = sorted({tuple(sorted((a, b))) for a, imports in GRAPH.items() for b in imports if a in GRAPH[b]})
    assert not pairs, f"modules importing each other: {pairs}; move what both need into a third module"


def test_the_root_of_fxq_holds_only_the_api_and_subpackages():
    files = sorted(p.name for p in PACKAGES["fxq"].iterdir() if p.is_file() and p.suffix == ".py")
    assert files == ["__init__.py", "api.py"], f"modules at the root of fxq/: {files}; put them in a subpackage"


def test_the_checker_sees_imports():
    # the rules above would pass vacuously if the parser found nothing
    assert "fxq.passes.pipeline" in GRAPH["fxq.passes.flows"]
    assert "fxq.passes.flows" in GRAPH["fxq.api"]
    assert "fxq.passes.flows" in GRAPH["fxq.debug.sensitivity"]  # a late import inside a function


@pytest.mark.parametrize("old, new", [("fxq.numeric", "fxq.debug.numeric"), ("fxq.tracer", "fxq.graph.tracer"),
                                      ("fxq.registry", "fxq.config.registry"), ("fxq.dump", "fxq.debug.dump")])
def test_module_paths_from_before_the_layout_still_import(old, new):
    import importlib

    import fxq
    assert importlib.import_module(old) is importlib.import_module(new)
    assert callable(fxq.dump) and callable(fxq.sensitivity)  # the public functions are not replaced by modules
    assert fxq.tracer is importlib.import_module("fxq.graph.tracer")  # attribute access as before
