"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on the path)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def usual_modes() -> tuple[int, int]:
    """(file mode, directory mode) that a plain ``open``/``mkdir`` gives under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask, 0o777 & ~umask


def unusual_modes(root: str | Path) -> list[str]:
    """Every file under ``root`` whose permission bits are not the user's usual ones (e.g. mkstemp's 0600)."""
    file_mode, _ = usual_modes()
    bad = []
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.is_symlink():
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode != file_mode:
                bad.append(f"{p.relative_to(root)}: {oct(mode)} (expected {oct(file_mode)})")
    return bad
