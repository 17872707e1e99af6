"""Image folders for training and evaluation: listing, loading, random crops with flips/transpose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def list_images(*folders: str | Path) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"{folder}: image folder does not exist")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {', '.join(map(str, folders))}")
    return files


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class RandomCrops(torch.utils.data.Dataset):
    """Random ``size`` crops of every image, with random h/v flips and transpose, as float CHW in [0, 1].

    Images are decoded once and kept in memory (uint8): RSSCN7's 700 training images take 336 MB.
    """

    def __init__(self, files: list[Path], size: int, seed: int = 0) -> None:
        self.images = [load_rgb(p) for p in files]
        small = [str(f) for f, im in zip(files, self.images) if min(im.shape[:2]) < size]
        if small:
            raise ConfigError(f"{len(small)} images are smaller than the {size}px crop, e.g. {small[0]}")
        self.size = size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        im = self.images[i]
        y = self.rng.integers(0, im.shape[0] - self.size + 1)
        x = self.rng.integers(0, im.shape[1] - self.size + 1)
        crop = im[y : y + self.size, x : x + self.size]
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        if self.rng.random() < 0.5:
            crop = crop[::-1]
        if self.rng.random() < 0.5:
            crop = crop.transpose(1, 0, 2)
        return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div(255)
