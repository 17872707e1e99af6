"""Typed station configuration (``configs/station.yaml``), validated on load.

Command-line options override these values; the file holds a station's defaults so operators do not repeat
them. Unknown keys are errors (a typo never silently becomes a default).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .registry import REPO_ROOT, load_yaml

DEFAULT_STATION = REPO_ROOT / "configs" / "station.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncodeDefaults(_Strict):
    tile_size: int = Field(256, description="codec tile size in pixels (multiple of 64)")
    threads: int = Field(1, ge=1, le=256, description="torch threads on the encoder (recorded in the header)")

    @field_validator("tile_size")
    @classmethod
    def _aligned(cls, v: int) -> int:
        if v % 64 or not 64 <= v <= 4096:
            raise ValueError(f"tile_size {v} must be a multiple of 64 between 64 and 4096")
        return v


class DecodeDefaults(_Strict):
    threads: int | None = Field(None, ge=1, le=256, description="None: the encoder's thread count from the header")
    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not (v == "cpu" or v == "cuda" or v.startswith("cuda:")):
            raise ValueError(f"device {v!r}: use cpu, cuda or cuda:N")
        return v


class StationConfig(_Strict):
    station: str = "demo-station"
    encode: EncodeDefaults = EncodeDefaults()
    decode: DecodeDefaults = DecodeDefaults()


def load_station(path: str | Path = DEFAULT_STATION) -> StationConfig:
    try:
        return StationConfig.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid station configuration: {exc}") from exc
