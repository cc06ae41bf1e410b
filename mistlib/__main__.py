"""``python -m mistlib``: the ``mist`` command line (:mod:`mistlib.cli`)."""

import sys

from mistlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
