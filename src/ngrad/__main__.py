"""``python -m ngrad``: the ``ngrad`` command."""

import sys

from ngrad.cli import main

if __name__ == "__main__":
    sys.exit(main())
