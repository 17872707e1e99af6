"""Typed station configuration (``configs/station.yaml``), validated on load.

Command-line options override these values; the file holds a station's defaults so operators do not repeat
them. Unknown keys are errors (a typo never silently becomes a default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .registry import REPO_ROOT, load_yaml

DEFAULT_STATION = REPO_ROOT / "configs" / "station.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncodeDefaults(_Strict):
    tile_size: int = Field(256, description="codec tile size in pixels (multiple of 64)")
    threads: int = Field(1, ge=1, le=256, description="torch threads on the encoder (recorded in the header)")
    entropy: Literal["float32", "float64"] = Field(
        "float64", description="numeric mode of the entropy-parameter path, recorded in each pass: float64 decodes "
        "on every x86 CPU (README, 'Decoding on any CPU'); float32 is CompressAI as it is")
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


class StationConfig(_Strict):
    station: str = "demo-station"
    encode: EncodeDefaults = EncodeDefaults()
    decode: DecodeDefaults = DecodeDefaults()
    orchestration: OrchestrationDefaults = OrchestrationDefaults()


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
        return StationConfig.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid station configuration: {exc}") from exc
