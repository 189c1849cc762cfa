"""Files of the instance folder that only the installation's own user may read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

#: Database, exports, generated secret: personal data or credentials, owner-only.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) owner-only if missing; an existing folder is kept."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def open_private(path: Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """Open ``path`` for writing, created (or truncated) owner-only from its first byte."""
    # Created with the mode rather than chmod-ed after: no moment where others could open it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # an existing file keeps its mode through O_CREAT
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def touch_private(path: Path) -> None:
    """Create an empty owner-only ``path`` unless it exists (an existing file is left alone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
