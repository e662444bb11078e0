"""``python -m kvstore``: the ``kvstore`` command (``kvstore.cli``)."""

import sys

from kvstore.cli import main

if __name__ == "__main__":
    sys.exit(main())
