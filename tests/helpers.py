"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on the path)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from distributed import WorkerPlugin

REPO = Path(__file__).resolve().parent.parent
#: Development data beside the checkout (../shared), absent on a plain clone: tests that need it skip.
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
FLOW_TILE = 128  # 200x300 scenes: 2x3 codec tiles, edge tiles smaller


def needs_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (development data is not part of the repository)")
    return path


def make_pass(folder: Path, codec: Path, pass_id: str, *, seed: int = 0, acquired: str = "2024-05-01T10:00:00+00:00",
              height: int = 200, width: int = 300) -> tuple[Path, Path]:
    """(scene.tif, pass container) of a small uint8 scene in EPSG:32618 with a nodata box."""
    from groundstation.encode import encode_scene
    from synth import write_scene

    folder.mkdir(parents=True, exist_ok=True)
    scene = write_scene(folder / f"{pass_id}.tif", height, width, crs="EPSG:32618", seed=seed, nodata=0,
                        nodata_box=(0, 20, 0, 30))
    out = folder / f"{pass_id}.gsp"
    encode_scene(scene, out, codec=str(codec), tile_size=FLOW_TILE, pass_id=pass_id, acquired=acquired)
    return scene, out


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


def two_point_registry(tiny_codec: Path, other_codec: Path, identity: Path, surrogate: Path, *,
                       temperature: float = 1.0, strength: float = 1.0):
    """A registry of two rate points on test models: ``hi`` (tiny codec, identity enhancer, T=0) and ``lo``
    (the other codec, ``surrogate``, T=``temperature``, ``strength``)."""
    from groundstation.fileio import sha256_file
    from groundstation.registry import Registry

    def entry(kind, path, **extra):
        arch = {"blocks": 1} if kind == "enhancer" else {}
        return {"kind": kind, "path": str(path), "sha256": sha256_file(path), "architecture": kind, "arch": arch,
                **extra}

    return Registry.model_validate({
        "default_codec": "c-hi",
        "models": {"c-hi": entry("codec", tiny_codec, lmbda=0.01), "c-lo": entry("codec", other_codec, lmbda=0.001),
                   "e-id": entry("enhancer", identity, codec="c-hi"),
                   "e-sur": entry("enhancer", surrogate, codec="c-lo")},
        "rate_points": {"hi": {"codec": "c-hi", "enhancer": "e-id", "temperature": 0.0},
                        "lo": {"codec": "c-lo", "enhancer": "e-sur", "temperature": temperature,
                               "strength": strength}},
    })


class CrashOnTiles(WorkerPlugin):
    """A Dask worker plugin for the crash tests: the worker that decodes one of ``tiles`` dies with SIGSEGV (as a
    broken entropy table can make native code do). Registered with ``client.register_plugin``; unregistering it
    restores the decoder on every worker (workers restarted after a crash get the plugin again meanwhile)."""

    name = "gsp-test-crash-on-tiles"

    def __init__(self, tiles) -> None:
        self.tiles = frozenset(int(t) for t in tiles)

    def setup(self, worker) -> None:
        import signal

        import groundstation.decode as decode

        real = decode.decode_tile_latent  # entropy decoding: what both decode modes run first
        tiles = self.tiles

        def crashing(tc, rec, header):
            if rec.tile_index in tiles:
                os.kill(os.getpid(), signal.SIGSEGV)
            return real(tc, rec, header)

        self._real = real
        decode.decode_tile_latent = crashing

    def teardown(self, worker) -> None:
        import groundstation.decode as decode

        decode.decode_tile_latent = getattr(self, "_real", decode.decode_tile_latent)
