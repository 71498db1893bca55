"""``python -m bayesgmm``: the ``bayesgmm`` command line, for when the
console script is not on PATH (same commands, options and exit codes)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
