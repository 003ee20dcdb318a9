"""``python -m qts.cli``: the same program as the ``qts`` entry point."""

import sys

from . import main

sys.argv[0] = "qts"
main()
