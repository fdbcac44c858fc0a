"""``python -m gpuops <command>``: ``info`` (environment report), ``demo``."""
from __future__ import annotations

import sys

from . import cli

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
