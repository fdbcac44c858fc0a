"""``python -m gpuops.emu``: run the emulated kernels under ASan/TSan (see sanitize.py)."""
import sys

from .sanitize import main

sys.exit(main(sys.argv[1:]))
