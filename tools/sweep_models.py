"""Every sweep case, by name: importing the model files registers them (see tools/sweep_cases.py).

Example:
    >>> from tools.sweep_models import CASES
    >>> len(CASES) >= 40
    True
"""
# registration order is the table's order: vision, mobile, dense prediction, sequence, newer and older idioms, forward shapes
from tools import sweep_vision, sweep_mobile, sweep_dense, sweep_sequence, sweep_modern, sweep_legacy, sweep_forms  # noqa: F401, I001
from tools.sweep_cases import REGISTRY

CASES = dict(REGISTRY)
