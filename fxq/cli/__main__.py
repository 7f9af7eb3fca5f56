"""``python -m fxq.cli``: the ``fxq`` command."""
import sys

from fxq.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
