"""The image subsets of round 3 (issue 16), as symlink folders (nothing copied):

* runs/data/train245: 35 RSSCN7 train images per class, index 0, 2, 4, ..., 68 of each class folder sorted by name;
* runs/data/valsel: the selection subset, index 0, 5, 10, 15 of each val class folder (28 images);
* runs/data/valrep: the reported part, the other 112 val images.

    python benchmarks/results/evaluation-v3/make_subsets.py [RSSCN7_ROOT]   (default ../shared/data/rsscn7)
"""
import os
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/rsscn7").resolve()
out = Path("runs/data")
for c in sorted(os.listdir(root / "train")):
    files = sorted(os.listdir(root / "train" / c))
    for f in files[:: len(files) // 35][:35]:
        d = out / "train245" / c
        d.mkdir(parents=True, exist_ok=True)
        if not (d / f).exists():
            (d / f).symlink_to(root / "train" / c / f)
for c in sorted(os.listdir(root / "val")):
    for i, f in enumerate(sorted(os.listdir(root / "val" / c))):
        d = out / ("valsel" if i % 5 == 0 else "valrep") / c
        d.mkdir(parents=True, exist_ok=True)
        if not (d / f).exists():
            (d / f).symlink_to(root / "val" / c / f)
for d in sorted(out.iterdir()):
    print(d, sum(1 for _ in d.rglob("*.jpg")))
