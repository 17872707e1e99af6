"""Typed station configuration (``configs/station.yaml``), validated on load.

Command-line options override these values; the file holds a station's defaults so operators do not repeat
them. Unknown keys are errors (a typo never silently becomes a default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .container import DEFAULT_ENTROPY, ENTROPY_MODES, FALLBACK_ENTROPY
from .errors import ConfigError
from .registry import REPO_ROOT, load_yaml

DEFAULT_STATION = REPO_ROOT / "configs" / "station.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncodeDefaults(_Strict):
    tile_size: int = Field(256, description="codec tile size in pixels (multiple of 64)")
    threads: int = Field(1, ge=1, le=256, description="torch threads on the encoder (recorded in the header)")
    entropy: Literal[ENTROPY_MODES] | None = Field(
        None, description=f"numeric mode of the entropy-parameter path, recorded in each pass. Unset: "
        f"{DEFAULT_ENTROPY}, exact on every CPU and GPU by construction (docs/determinism.md), for a codec that "
        f"has an integer prior (every registry codec), else {FALLBACK_ENTROPY} with a logged note. Set: that mode "
        "whatever the codec (int without an integer prior is an error); float64 decodes on every x86 CPU "
        "measured; float32 is CompressAI as it is")
    require_crs: bool = Field(False, description="refuse scenes without a CRS instead of processing them as "
                              "pixel grids")

    @field_validator("tile_size")
    @classmethod
    def _aligned(cls, v: int) -> int:
        if v % 64 or not 64 <= v <= 4096:
            raise ValueError(f"tile_size {v} must be a multiple of 64 between 64 and 4096")
        return v


class DecodeDefaults(_Strict):
    threads: int | None = Field(None, ge=1, le=256, description="None: the encoder's thread count from the header")
    device: str = "cpu"
    synthesis: Literal["float32", "float64"] = Field(
        "float32", description="float64: pixels bit-identical on every x86 CPU, at about 3x the decode time")
    mode: Literal["tile", "mosaic"] = Field(
        "mosaic", description="how pixels are made from the tiles' latents: mosaic (g_s over the stitched latent "
        "mosaic in windows: no seams at codec-tile boundaries, docs/seams.md) or tile (g_s per codec tile, as "
        "products made before the mosaic mode)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not (v == "cpu" or v == "cuda" or v.startswith("cuda:")):
            raise ValueError(f"device {v!r}: use cpu, cuda or cuda:N")
        return v


class OrchestrationDefaults(_Strict):
    api_startup_timeout_s: float = Field(
        120.0, gt=0, le=3600,
        description="seconds to wait for Prefect's ephemeral API to start when PREFECT_API_URL is not set "
        "(Prefect's own default of 20 s is too short on a busy machine)")
    keep_runs_days: float | None = Field(
        30.0, gt=1 / 24, le=3650,
        description="the Prefect server that `gsp serve` starts deletes flow runs (with their logs, artifacts "
        "and task runs) that ended longer ago than this, so its database stops growing; products are files and "
        "are never touched; null: keep every run (a server you start yourself: docs/operations.md)")


class DownlinkDefaults(_Strict):
    """How passes are taken while they arrive (a writer appending to ``NAME.part``)."""

    stale_after_s: float = Field(
        3600.0, gt=0, le=7 * 86400,
        description="a pass whose file has not grown for this long has ended (a downlink cut short for good): "
        "its missing tiles are declared lost and listed for retransmission")
    batch_window_s: float = Field(
        2.0, gt=0, le=600, description="records that arrived are decoded at the latest this many seconds after "
        "the first of them, even when fewer than a batch")


#: The station's folders, by what they hold (``roots`` in the station file).
ROOT_NAMES = ("inbox", "archive", "products", "runs", "weights")


class RootsConfig(_Strict):
    """The folders a run started from a deployment (the Prefect UI, a schedule, ``prefect deployment run``, an
    automation) may read and write: every path parameter must resolve, symlinks followed, under one of them
    (:mod:`groundstation.roots`). A folder left out is ``home/<name>``; relative paths are relative to
    ``home``, and a relative ``home`` to the station file's folder."""

    home: str = Field("~/gsp-station", description="the station folder; the default of every root below")
    inbox: str | None = Field(None, description="passes arrive here (watch-inbox; process-pass reads here)")
    archive: str | None = Field(None, description="archived passes and source scenes (reprocess-archive)")
    products: str | None = Field(None, description="products are written only under here")
    runs: str | None = Field(None, description="training and evaluation runs (checkpoints may be read here)")
    weights: str | None = Field(None, description="checkpoint files named by path instead of by registry name")
    enforce: Literal["deployments", "always"] = Field(
        "deployments", description="deployments: only runs started from a deployment are held to the roots (a "
        "local operator's commands take any path the shell user may use); always: every run")

    @field_validator("home", "inbox", "archive", "products", "runs", "weights")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("an empty path; leave the key out for the default")
        return v

    def anchored(self, base: str | Path) -> "RootsConfig":
        """The same roots as absolute paths (``~`` expanded; relative ``home`` taken from ``base``)."""
        home = Path(self.home).expanduser()
        home = home if home.is_absolute() else Path(base) / home
        paths = {}
        for name in ROOT_NAMES:
            value = getattr(self, name)
            p = home / name if value is None else Path(value).expanduser()
            paths[name] = str(p if p.is_absolute() else home / p)
        return self.model_copy(update={"home": str(home), **paths})

    def paths(self) -> dict[str, Path]:
        """{root name: folder} (call on :meth:`anchored` roots, as :func:`load_station` returns them)."""
        return {name: Path(getattr(self, name) or Path(self.home) / name) for name in ROOT_NAMES}


class StationConfig(_Strict):
    station: str = "demo-station"
    encode: EncodeDefaults = EncodeDefaults()
    decode: DecodeDefaults = DecodeDefaults()
    orchestration: OrchestrationDefaults = OrchestrationDefaults()
    downlink: DownlinkDefaults = DownlinkDefaults()
    roots: RootsConfig = RootsConfig()


#: Environment variable naming the station file (``gsp --station FILE`` sets it, so the flow's worker
#: processes and served runs read the same station as the command that started them).
STATION_ENV = "GSP_STATION"


def station_path() -> Path:
    """The station file in force: ``$GSP_STATION`` or ``configs/station.yaml``."""
    return Path(os.environ.get(STATION_ENV) or DEFAULT_STATION)


def load_station(path: str | Path | None = None) -> StationConfig:
    """Load and validate a station file (default: :func:`station_path`)."""
    path = station_path() if path is None else path
    try:
        config = StationConfig.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid station configuration: {exc}") from exc
    return config.model_copy(update={"roots": config.roots.anchored(Path(path).resolve().parent)})
