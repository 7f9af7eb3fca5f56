"""The ``fxq`` command (``fxq.cli.main``), its subcommands and the demo model it ships (``data/``)."""
from fxq.cli.main import main  # `from fxq.cli import main` worked when the command was one module

__all__ = ["main"]
