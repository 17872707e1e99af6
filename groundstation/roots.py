"""Who may do what: the station's folders (``roots`` in the station file) and the one check that a path lies
under them.

A run started from the Prefect UI takes its paths from someone who has no shell on the station. Every path
parameter of such a run is resolved here (``~`` expanded, ``..`` collapsed, every symlink followed) and must
lie under one of the roots that this *kind* of parameter may use; anything else is a :class:`PathNotAllowed`
before anything is read or written. The flows decide when the check is in force (``flows.access``); this
module only knows folders.

=============  ============================  ==========================================================
kind           roots                         parameters
=============  ============================  ==========================================================
``pass``       inbox, archive                process-pass ``pass_path``; the files reprocess-archive and
                                             watch-inbox pick up
``products``   products                      process-pass ``out_dir``; ``products`` of the other flows
``inbox``      inbox                         watch-inbox ``inbox``
``archive``    archive                       reprocess-archive ``archive``
``scene``      archive, inbox                ``options.reference``
``checkpoint`` weights, runs                 ``options.codec`` / ``options.enhancer`` given as a file; a
                                             training's start weights and ``export`` (gsp.jobs)
``run``        runs                          a training or evaluation run's folder (``out`` of train-codec,
                                             train-enhancer, evaluate)
``dataset``    archive, runs                 training images and pairs, evaluation images, reference
                                             points (``data``, ``pairs``, ``images``, ``reference``)
=============  ============================  ==========================================================

Registry names are not paths: the registry is the station's own file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import ROOT_NAMES, RootsConfig
from .errors import GSPError

__all__ = ["KINDS", "PathNotAllowed", "StationRoots"]

#: Which roots each kind of path parameter may lie under (see the module docstring).
KINDS: dict[str, tuple[str, ...]] = {
    "pass": ("inbox", "archive"),
    "products": ("products",),
    "inbox": ("inbox",),
    "archive": ("archive",),
    "scene": ("archive", "inbox"),
    "checkpoint": ("weights", "runs"),
    "run": ("runs",),
    "dataset": ("archive", "runs"),
}


class PathNotAllowed(GSPError):
    """A path parameter of a run started from a deployment lies outside the station's roots (or is relative);
    the run is refused before anything is read or written."""


@dataclass(frozen=True)
class StationRoots:
    """The station's root folders, resolved (symlinks followed) once."""

    folders: dict[str, Path]
    source: str = "the station file"  # named in error messages: where to add a root

    @classmethod
    def from_config(cls, roots: RootsConfig, source: str = "the station file") -> "StationRoots":
        return cls({name: Path(os.path.realpath(p)) for name, p in roots.paths().items()}, source)

    def check(self, param: str, value: str | os.PathLike, kind: str) -> Path:
        """``value`` resolved, when it lies under one of the roots of ``kind``; else :class:`PathNotAllowed`
        naming the parameter, what it resolves to and the roots it may use. Nothing is read: only the path's
        symlinks are followed (a path that does not exist yet is resolved as far as it exists)."""
        try:
            allowed = KINDS[kind]
        except KeyError:
            raise ValueError(f"unknown kind of path {kind!r}; one of {sorted(KINDS)}") from None
        where = " or ".join(f"{name} ({self.folders[name]})" for name in allowed)
        text = os.fspath(value)
        if not text or "\0" in text:
            raise PathNotAllowed(f"{param} {text!r}: not a path; give a file or folder under {where}")
        path = Path(text).expanduser()
        if not path.is_absolute():
            raise PathNotAllowed(f"{param} {text!r}: a relative path; give an absolute path under {where}")
        real = Path(os.path.realpath(path))
        for name in allowed:
            if real.is_relative_to(self.folders[name]):
                return real
        via = f" (resolves to {real})" if real != path else ""
        raise PathNotAllowed(
            f"{param} {text}{via} is outside the station's roots allowed for it: {where}. Put it under one of "
            f"them, or add the folder as a root in {self.source} (roots: {', '.join(ROOT_NAMES)})")

    def folder(self, name: str) -> Path:
        return self.folders[name]
