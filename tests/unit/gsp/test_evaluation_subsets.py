"""The evaluation's image subsets: train245 (35 per class), the selection subset (every 5th val image) and the
reported part (the rest), as links, disjoint, idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundstation.errors import ConfigError
from gsp.evaluation.subsets import main, make_subsets


def _dataset(root: Path, train: int = 100, val: int = 20, classes=("aGrass", "bField")) -> Path:
    for split, n in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                (root / split / c / f"{c}_{i:03d}.jpg").write_bytes(b"x")
    return root


def test_subsets_pick_the_documented_images(tmp_path):
    root = _dataset(tmp_path / "rsscn7")
    counts = make_subsets(root, tmp_path / "data")
    assert counts == {"train245": 70, "valrep": 32, "valsel": 8}
    train = sorted(p.name for p in (tmp_path / "data" / "train245" / "aGrass").iterdir())
    assert train == [f"aGrass_{i:03d}.jpg" for i in range(0, 70, 2)]
    sel = sorted(p.name for p in (tmp_path / "data" / "valsel" / "bField").iterdir())
    assert sel == [f"bField_{i:03d}.jpg" for i in (0, 5, 10, 15)]
    rep = {p.name for p in (tmp_path / "data" / "valrep" / "bField").iterdir()}
    assert not rep & set(sel) and len(rep | set(sel)) == 20  # disjoint, together the whole val class
    link = tmp_path / "data" / "valsel" / "bField" / "bField_005.jpg"
    assert link.is_symlink() and link.resolve() == (root / "val" / "bField" / "bField_005.jpg").resolve()
    assert make_subsets(root, tmp_path / "data") == counts  # a rerun keeps what is there


def test_a_missing_dataset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="train/ and val/"):
        make_subsets(tmp_path / "nothing", tmp_path / "data")
    assert main([str(tmp_path / "nothing"), "-o", str(tmp_path / "data")]) == 2
    assert "train/ and val/" in capsys.readouterr().err
