"""Window planning for enhancing a mosaic in pieces: a pure function of the mosaic shape, core and halo.

Invariants (tested in tests/test_enhancer_inference.py):

* the core boxes partition the mosaic exactly (every pixel in exactly one core);
* cores start on multiples of the core size (so they line up with storage chunks of that size); cores at
  the bottom and right edges may be smaller;
* each read box is its core expanded by ``halo`` on every side and clipped to the mosaic, so it lies
  inside the mosaic and contains at least ``min(halo, distance to the edge)`` pixels of context per side.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Box", "Window", "plan_windows"]


@dataclass(frozen=True)
class Box:
    """Half-open pixel box ``[y0, y1) x [x0, x1)`` in mosaic coordinates."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass(frozen=True)
class Window:
    """A core (the pixels this window writes) and its read box (the pixels it reads: core + halo)."""

    core: Box
    read: Box

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Slices that cut the core out of an array covering the read box."""
        return (slice(self.core.y0 - self.read.y0, self.core.y1 - self.read.y0),
                slice(self.core.x0 - self.read.x0, self.core.x1 - self.read.x0))


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair[0], pair[1]


def plan_windows(shape: tuple[int, int], core: int | tuple[int, int] = 256,
                 halo: int | tuple[int, int] = 32) -> list[Window]:
    """Split a mosaic of ``shape = (H, W)`` into windows, row-major.

    Cores are the cells of a grid of pitch ``core`` anchored at (0, 0), clipped to the mosaic; read boxes
    are cores grown by ``halo`` per side and clipped to the mosaic. ``core`` and ``halo`` may be ints or
    ``(rows, cols)`` pairs. An empty mosaic gives no windows.
    """
    h, w = _pair(tuple(shape), "shape")
    cy, cx = _pair(core, "core")
    hy, hx = _pair(halo, "halo")
    if h < 0 or w < 0:
        raise ValueError(f"mosaic shape must be non-negative, got {(h, w)}")
    if cy < 1 or cx < 1:
        raise ValueError(f"core must be >= 1, got {(cy, cx)}")
    if hy < 0 or hx < 0:
        raise ValueError(f"halo must be >= 0, got {(hy, hx)}")
    windows = []
    for y0 in range(0, h, cy):
        y1 = min(y0 + cy, h)
        for x0 in range(0, w, cx):
            x1 = min(x0 + cx, w)
            windows.append(Window(
                core=Box(y0, y1, x0, x1),
                read=Box(max(y0 - hy, 0), min(y1 + hy, h), max(x0 - hx, 0), min(x1 + hx, w)),
            ))
    return windows
