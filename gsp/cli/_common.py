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


def tiling_options(p: argparse.ArgumentParser, what: str, default: str) -> None:
    """``--tile-size`` and ``--decode-mode`` (:class:`gsp.tiling.Tiling`): images coded as the satellite codes a
    scene and decoded as the station decodes a pass; ``what`` says what that gives, ``default`` what happens
    without them."""
    p.add_argument("--tile-size", type=int, default=0, metavar="PX",
                   help="code every image as the satellite codes a scene, PX codec tiles each on its own (the "
                   f"station's 256), and decode it as the station does; {what} (default: {default})")
    p.add_argument("--decode-mode", choices=["tile", "mosaic"],
                   help="with --tile-size: how pixels are made from the tiles' latents, mosaic (seamless) or tile "
                   "(g_s per tile) (default: the station's decode.mode)")
