"""Every docstring example in fxq, fxq.passes and fxq.patterns runs and prints what it says."""
import doctest
import importlib
import pkgutil
import warnings

import pytest

import fxq
import fxq.passes
import fxq.patterns


def _modules():
    for package in (fxq, fxq.passes, fxq.patterns):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(("fxq.passes", "fxq.patterns")) or package is not fxq:
                yield info.name


@pytest.mark.parametrize("name", sorted(set(_modules())))
def test_docstring_examples_run(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed; run python -m doctest on it"
