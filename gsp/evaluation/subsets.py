"""The image subsets the reported evaluation uses, as folders of symbolic links (nothing copied):

* ``train245``: 35 training images per class, every ``n // 35``-th of each class folder sorted by name (for
  RSSCN7's 100 per class: index 0, 2, ..., 68) - the enhancers' training pairs;
* ``valsel``: the **selection subset**, index 0, 5, 10, ... of each validation class folder sorted by name (for
  RSSCN7: 4 per class, 28 images) - the only images the operating point is chosen on
  (``benchmarks/results/evaluation-v3/RULE.md``);
* ``valrep``: the **reported part**, every other validation image (112 for RSSCN7).

    python -m gsp.evaluation.subsets ../shared/data/rsscn7 [-o runs/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groundstation.errors import ConfigError

__all__ = ["SELECTION_EVERY", "TRAIN_PER_CLASS", "make_subsets", "main"]

#: Training images per class in ``train245``.
TRAIN_PER_CLASS = 35
#: Every this-many-th validation image of a class (sorted by name, from the first) is in the selection subset.
SELECTION_EVERY = 5


def _classes(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not found; give the dataset root holding train/ and val/ class folders")
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _link(target: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / target.name).exists():
        (folder / target.name).symlink_to(target)


def make_subsets(root: str | Path, out: str | Path = "runs/data") -> dict[str, int]:
    """Write ``out/train245``, ``out/valsel`` and ``out/valrep`` (class folders of links into ``root``'s
    ``train/`` and ``val/``); existing links are kept. Returns the image count of each subset."""
    root, out = Path(root).resolve(), Path(out)
    for cls in _classes(root / "train"):
        files = sorted(p.name for p in cls.iterdir())
        if len(files) < TRAIN_PER_CLASS:
            raise ConfigError(f"{cls}: {len(files)} images, fewer than the {TRAIN_PER_CLASS} train245 takes per class")
        for name in files[:: len(files) // TRAIN_PER_CLASS][:TRAIN_PER_CLASS]:
            _link(cls / name, out / "train245" / cls.name)
    for cls in _classes(root / "val"):
        for i, name in enumerate(sorted(p.name for p in cls.iterdir())):
            _link(cls / name, out / ("valsel" if i % SELECTION_EVERY == 0 else "valrep") / cls.name)
    return {d.name: sum(1 for p in d.rglob("*") if p.is_symlink()) for d in sorted(out.iterdir()) if d.is_dir()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gsp.evaluation.subsets", description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default="../shared/data/rsscn7", help="dataset root with train/ and val/")
    p.add_argument("-o", "--out", default="runs/data", help="folder of the subsets (default runs/data)")
    args = p.parse_args(argv)
    try:
        counts = make_subsets(args.root, args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, n in counts.items():
        print(f"{Path(args.out) / name} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
