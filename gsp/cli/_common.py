"""What every command group of ``gsp`` shares: argument types, the help formatter, the progress switch.

Light on purpose: ``gsp --help`` imports this and the group modules, never torch, Prefect, Dask or CompressAI
(each handler imports what it needs when it runs).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["Paragraphs", "bands", "progress", "station"]


def bands(text: str) -> list[int]:
    """``--bands 4,3,2``: one-based band numbers."""
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give band numbers like 4,3,2")


class Paragraphs(argparse.HelpFormatter):
    """Wraps the description and epilog paragraph by paragraph (blank lines kept; lines starting with two spaces
    kept as they are, for examples)."""

    def _fill_text(self, text, width, indent):
        import textwrap

        out = []
        for para in text.split("\n\n"):
            if para.startswith("  ") or "\n  " in para:
                out.append("\n".join(indent + line for line in para.splitlines()))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                         subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(out)


def progress() -> bool:
    """Progress bars only on a terminal."""
    return sys.stderr.isatty()


def station():
    """The station configuration (``--station`` or configs/station.yaml)."""
    from groundstation.config import load_station

    return load_station()
