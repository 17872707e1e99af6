"""Training pairs for the enhancer: ground truth and the same image compressed and decoded by the real ELIC.

Layout of a pairs folder (written by :func:`make_pairs`, ``gsp make-pairs``)::

    OUT/gt/NAME.png         the ground truth, losslessly (a JPEG source is stored as its decoded pixels)
    OUT/decoded/NAME.png    the same image after a real ELIC compress/decompress (whole image, padded to 64; or
                            with --tile-size, tile by tile as a pass is coded and decoded: :class:`gsp.tiling.Tiling`)
    OUT/pairs.csv           one row per pair: name, height, width, bytes, bpp, psnr_db, source
    OUT/pairs.json          the codec (name, sha256, architecture, lambda), tiling, count, mean bpp, mean PSNR

``NAME`` is the image's path relative to the folder it was found in, without suffix, with ``/`` replaced by
``__`` (``train/aGrass/a001.jpg`` under ``train`` becomes ``aGrass__a001``). A rerun skips pairs already done
(both PNGs present and a CSV row), so an interrupted run resumes; a rerun with another codec or tiling is refused.

:class:`PairSet` holds a pairs folder in memory and draws training batches as a pure function of
``(seed, step)``: random crops, h/v flips and transpose applied identically to both images of a pair. A
resumed training run therefore sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from groundstation.errors import ConfigError, DesyncError
from groundstation.fileio import atomic_path, write_json_atomic
from gsp.tiling import WHOLE, Tiling

__all__ = [
    "PAIRS_CSV",
    "PAIRS_JSON",
    "PairRecord",
    "PairSet",
    "PairsSummary",
    "make_pairs",
    "pair_names",
    "read_pairs",
]

log = logging.getLogger(__name__)

GT_DIR = "gt"
DECODED_DIR = "decoded"
PAIRS_CSV = "pairs.csv"
PAIRS_JSON = "pairs.json"


@dataclass(frozen=True)
class PairRecord:
    """One row of ``pairs.csv``: bytes of the ELIC strings, bpp over the unpadded pixels, PSNR (peak 255)."""

    name: str
    height: int
    width: int
    bytes: int
    bpp: float
    psnr_db: float
    source: str = ""

    @classmethod
    def from_row(cls, row: dict[str, str]) -> PairRecord:
        return cls(name=row["name"], height=int(row["height"]), width=int(row["width"]), bytes=int(row["bytes"]),
                   bpp=float(row["bpp"]), psnr_db=float(row["psnr_db"]), source=row.get("source", ""))

    def as_row(self) -> dict[str, str | int]:
        return {"name": self.name, "height": self.height, "width": self.width, "bytes": self.bytes,
                "bpp": f"{self.bpp:.6f}", "psnr_db": f"{self.psnr_db:.4f}", "source": self.source}


_COLUMNS = [f.name for f in fields(PairRecord)]


@dataclass(frozen=True)
class PairsSummary:
    """What :func:`make_pairs` did: ``made`` new pairs, ``skipped`` already present, totals over all pairs."""

    out: str
    codec: str
    codec_sha256: str
    count: int
    made: int
    skipped: int
    mean_bpp: float
    mean_psnr_db: float


def pair_names(folders: list[str | Path]) -> dict[str, Path]:
    """Pair name -> image file for every image under ``folders`` (recursively), in sorted order per folder.

    Raises ConfigError when two files map to the same name (e.g. the same relative path in two folders).
    """
    from groundstation.images import list_images

    names: dict[str, Path] = {}
    for folder in folders:
        root = Path(folder)
        for path in list_images(root):
            name = path.relative_to(root).with_suffix("").as_posix().replace("/", "__")
            if name in names:
                raise ConfigError(f"{names[name]} and {path} both map to pair name {name!r}; give the folders in "
                                  "separate make-pairs runs (different -o) or rename one file")
            names[name] = path
    return names


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write atomically: a crash never leaves a truncated PNG under the final name."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _read_rows(csv_path: Path) -> dict[str, PairRecord]:
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return {r["name"]: PairRecord.from_row(r) for r in rows}
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{csv_path}: not a pairs table written by gsp make-pairs ({exc}); "
                          "remove it or choose another -o") from exc


def _write_rows(csv_path: Path, records: list[PairRecord]) -> None:
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS)
        writer.writeheader()
        for rec in sorted(records, key=lambda r: r.name):
            writer.writerow(rec.as_row())


def _manifest(codec_info: dict, records: list[PairRecord], folders: list[str], complete: bool,
              tiling: Tiling = WHOLE) -> dict:
    label = tiling.label_for(codec_info["sha256"])
    if tiling.tile_size:
        method = (f"every {tiling.tile_size} px codec tile of the image ELIC-compressed on its own, as the satellite "
                  f"codes a scene, and decoded as the station decodes a pass ({tiling.decode_mode} mode), so crops "
                  "that straddle a tile boundary show what the station's products show there; CPU, 1 thread; "
                  "bpp = bytes of all tiles * 8 / pixels")
    else:
        method = ("whole image, edge-padded to a multiple of 64, ELIC compress then decompress on the CPU with "
                  "1 thread; bpp = bytes * 8 / unpadded pixels")
    return {
        "codec": codec_info,
        "count": len(records),
        "mean_bpp": float(np.mean([r.bpp for r in records])) if records else math.nan,
        "mean_psnr_db": float(np.mean([r.psnr_db for r in records if math.isfinite(r.psnr_db)]))
        if records else math.nan,
        "complete": complete,
        "sources": folders,
        "layout": {"gt": f"{GT_DIR}/NAME.png", "decoded": f"{DECODED_DIR}/NAME.png", "table": PAIRS_CSV},
        "tiling": label,
        "method": method,
    }


def _write_json(path: Path, data: dict) -> None:
    write_json_atomic(path, data)


def make_pairs(folders: list[str | Path], out: str | Path, codec: str | None = None, *, limit: int | None = None,
               progress: bool = False, threads: int = 1, tiling: Tiling = WHOLE) -> PairsSummary:
    """Compress and decompress every image under ``folders`` with the ELIC ``codec`` (registry name or file),
    whole or as the station's codec tiles (``tiling``: pairs whose crops straddle tile boundaries).

    Resumes: pairs already in ``out`` are skipped. Refuses an ``out`` made with another codec (sha256) or
    another tiling.
    ``limit`` keeps the first ``limit`` images (sorted order). A tile whose decoded symbols disagree with the
    encoder's (witness mismatch) is decoded again in strict mode (CPU, 1 thread) before giving up.
    """
    from tqdm import tqdm

    from groundstation.codec import TileCodec, load_codec
    from groundstation.images import load_rgb
    from groundstation.metrics import psnr_db
    from groundstation.registry import mosaic_g_s_sha256, resolve_model

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: give a positive number of images")
    out = Path(out)
    names = pair_names(folders)
    items = list(names.items())[:limit] if limit else list(names.items())

    codec_name, codec_path, expected, entry = resolve_model(codec, "codec")
    loaded = load_codec(codec_path, expected)
    codec_info = {"name": codec_name, "sha256": loaded.sha256, "path": str(codec_path),
                  "arch": loaded.arch.as_dict(), "lmbda": entry.lmbda if entry else None, "tables": loaded.tables}
    json_path = out / PAIRS_JSON
    if json_path.is_file():
        try:
            manifest = json.loads(json_path.read_text())
            previous = manifest["codec"]["sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{json_path}: unreadable ({exc}); remove it or choose another -o") from exc
        if previous != loaded.sha256:
            raise ConfigError(f"{out} holds pairs made with codec sha256 {previous[:16]}..., not {codec_name} "
                              f"({loaded.sha256[:16]}...); choose another -o (one pairs folder per codec)")
        previous_tiling = manifest.get("tiling", WHOLE.label)  # folders from before tiling existed: whole images
        label = tiling.label_for(loaded.sha256)
        if previous_tiling != label:
            raise ConfigError(f"{out} holds pairs coded {previous_tiling}, not {label}; choose another -o (one "
                              "pairs folder per codec and tiling)")
    for sub in (GT_DIR, DECODED_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)

    csv_path = out / PAIRS_CSV
    done = _read_rows(csv_path)
    folder_list = [str(f) for f in folders]
    _write_json(json_path, _manifest(codec_info, list(done.values()), folder_list, complete=False, tiling=tiling))
    tc = TileCodec(loaded, threads=threads, mosaic_g_s=mosaic_g_s_sha256(loaded.sha256))  # used in mosaic mode
    made = skipped = 0
    bar = tqdm(items, desc="make-pairs", unit="img", disable=not progress)
    try:
        for name, path in bar:
            gt_path, dec_path = out / GT_DIR / f"{name}.png", out / DECODED_DIR / f"{name}.png"
            if name in done and gt_path.is_file() and dec_path.is_file():
                skipped += 1
                continue
            try:
                image = load_rgb(path).copy()  # writable: torch.from_numpy warns on read-only arrays
            except OSError as exc:
                raise ConfigError(f"{path}: cannot be read as an RGB image ({exc})") from exc
            try:
                decoded, nbytes = tiling.roundtrip(tc, image, what=str(path))
            except DesyncError as exc:
                raise DesyncError(f"{exc}; codec {codec_name} is not usable on this machine") from None
            h, w = image.shape[:2]
            rec = PairRecord(name=name, height=h, width=w, bytes=nbytes, bpp=nbytes * 8 / (h * w),
                             psnr_db=psnr_db(decoded, image), source=str(path))
            _write_png(gt_path, image)
            _write_png(dec_path, decoded)
            done[name] = rec
            _write_rows(csv_path, list(done.values()))
            made += 1
            bar.set_postfix(bpp=f"{rec.bpp:.3f}", psnr=f"{rec.psnr_db:.2f}")
    finally:
        bar.close()
    records = list(done.values())
    manifest = _manifest(codec_info, records, folder_list, complete=True, tiling=tiling)
    _write_json(json_path, manifest)
    return PairsSummary(out=str(out), codec=codec_name, codec_sha256=loaded.sha256, count=len(records), made=made,
                        skipped=skipped, mean_bpp=manifest["mean_bpp"], mean_psnr_db=manifest["mean_psnr_db"])


def read_pairs(folder: str | Path) -> tuple[list[PairRecord], dict]:
    """The records of a pairs folder (sorted by name) and its ``pairs.json``."""
    folder = Path(folder)
    csv_path, json_path = folder / PAIRS_CSV, folder / PAIRS_JSON
    if not csv_path.is_file() or not json_path.is_file():
        raise ConfigError(f"{folder}: not a pairs folder (no {PAIRS_CSV} / {PAIRS_JSON}); make one with "
                          "gsp make-pairs IMAGE_DIR -o FOLDER --codec CODEC")
    records = sorted(_read_rows(csv_path).values(), key=lambda r: r.name)
    if not records:
        raise ConfigError(f"{csv_path}: no pairs")
    return records, json.loads(json_path.read_text())


def _seed(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


class PairSet:
    """A pairs folder in memory (uint8) and its batch sampler.

    :meth:`batch` is a pure function of ``(seed, step)``: sample ``k = step * batch_size + j`` is pair
    ``perm_e[k mod n]`` with ``perm_e`` a permutation drawn for epoch ``e = k // n`` (every pair once per
    epoch), its crop position and flips drawn from ``(seed, step, j)``.
    """

    def __init__(self, folder: str | Path) -> None:
        from groundstation.images import load_rgb

        self.folder = Path(folder)
        self.records, self.manifest = read_pairs(self.folder)
        self.gt: list[np.ndarray] = []
        self.decoded: list[np.ndarray] = []
        for rec in self.records:
            paths = [self.folder / GT_DIR / f"{rec.name}.png", self.folder / DECODED_DIR / f"{rec.name}.png"]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ConfigError(f"{missing[0]} is missing; rerun gsp make-pairs on {self.folder} to complete it")
            gt, dec = (load_rgb(p) for p in paths)
            if gt.shape != dec.shape:
                raise ConfigError(f"pair {rec.name}: ground truth {gt.shape} and decoded {dec.shape} differ in size")
            self.gt.append(gt)
            self.decoded.append(dec)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def min_side(self) -> int:
        return min(min(im.shape[:2]) for im in self.gt)

    def indices(self, step: int, batch_size: int, seed: int) -> list[int]:
        n = len(self)
        out = []
        for k in range(step * batch_size, (step + 1) * batch_size):
            perm = _seed(seed, 0, k // n).permutation(n)
            out.append(int(perm[k % n]))
        return out

    def batch(self, step: int, batch_size: int, crop: int, *, seed: int = 0,
              transpose: bool = True) -> tuple[Tensor, Tensor]:
        """``(gt, decoded)``, float32 ``(batch_size, 3, crop, crop)`` in [0, 1], identically augmented."""
        if crop > self.min_side:
            small = next(r.name for r, im in zip(self.records, self.gt) if min(im.shape[:2]) < crop)
            raise ConfigError(f"crop {crop} is larger than pair {small!r} ({self.min_side} px on its short side); "
                              "use a smaller --crop or larger images")
        gts, decs = [], []
        for j, i in enumerate(self.indices(step, batch_size, seed)):
            rng = _seed(seed, 1, step, j)
            gt, dec = self.gt[i], self.decoded[i]
            y = int(rng.integers(0, gt.shape[0] - crop + 1))
            x = int(rng.integers(0, gt.shape[1] - crop + 1))
            hflip, vflip, trans = rng.random(3) < 0.5
            pair = []
            for im in (gt, dec):
                c = im[y: y + crop, x: x + crop]
                if hflip:
                    c = c[:, ::-1]
                if vflip:
                    c = c[::-1]
                if trans and transpose:
                    c = c.transpose(1, 0, 2)
                pair.append(np.ascontiguousarray(c))
            gts.append(pair[0])
            decs.append(pair[1])

        def to_tensor(blocks: list[np.ndarray]) -> Tensor:
            return torch.from_numpy(np.stack(blocks)).permute(0, 3, 1, 2).float().div_(255.0)

        return to_tensor(gts), to_tensor(decs)
