"""Files built once per machine into a cache shared by processes (the native 16-bit library,
the emulator's kernel libraries)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def build_once(target: Path, make: Callable[[str], object]) -> Path:
    """``target``, made by ``make(path)`` unless it exists: ``make`` writes a temporary file
    beside it, which is renamed into place, so that a concurrent build or reader never sees
    half a file (the temporary file is removed if ``make`` raises)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
    os.close(fd)
    try:
        make(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
