"""The typed options of a ``process-pass`` run: validated before anything runs, unknown fields refused (the
Prefect UI's run form and the CLI fill the same model)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from groundstation.errors import ConfigError

from .access import SceneFile, checked_model

__all__ = ["ProcessOptions", "station_options"]


class ProcessOptions(BaseModel):
    """What to do with a pass, validated before anything runs (unknown fields are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: SceneFile | None = Field(None, description="source GeoTIFF for full-reference metrics (read in "
                                        "windows); from the UI: a file under the archive or inbox root")
    codec: str | None = Field(None, description="registry name or checkpoint file (default: the codec the "
                              "pass header names; its sha256 must match the header's)")
    enhancer: str | None = Field(None, description="registry name or checkpoint file (default: the registry's "
                                 "default_enhancer)")
    enhance: bool = Field(True, description="False: decoded-only product (--no-enhance)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the latent field z")
    temperature: float | None = Field(None, ge=0.0, le=10.0, description="z scale, 0 = deterministic mean; None: "
                                      "the operating point the registry records for the enhancer's rate point")
    strength: float | None = Field(None, gt=0.0, le=1.0, description="fraction of the enhancer's change the "
                                   "product keeps, decoded + strength x (enhanced - decoded); None: the operating "
                                   "point the registry records for the enhancer's rate point (else 1)")
    halo: int = Field(32, ge=0, le=1024, description="context pixels around each enhancement core (even)")
    tiles_per_batch: int = Field(8, ge=1, le=10_000, description="codec tiles per Prefect task")
    core_tiles: int | None = Field(None, ge=1, le=16, description="enhancement core, in codec tiles a side "
                                   "(None: chosen per pass and cluster; bigger cores read less halo, "
                                   "smaller ones leave less for after a streamed pass's last byte)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: GPU workers when the cluster "
                                                  "offers a GPU resource, else CPU")
    threads: int = Field(1, ge=1, le=256, description="torch threads per task for enhancement and metrics")
    synthesis: Literal["float32", "float64"] = Field(
        "float32", description="pixel synthesis: float64 makes the decoded pixels bit-identical on every x86 CPU "
        "(about 3x the decode time); the whole product is written in one mode")
    decode_mode: Literal["tile", "mosaic"] = Field(
        "mosaic", description="how pixels are made from the tiles' latents: mosaic = ELIC's synthesis over the "
        "stitched latent mosaic, no seams at codec-tile boundaries; tile = synthesis per codec tile (a grid of "
        "seams; the products made before the mosaic mode); part of the product version")
    mosaic_synthesis: Literal["tuned", "codec"] = Field(
        "tuned", description="decode mode mosaic: tuned = ELIC's synthesis fine-tuned for the latent mosaic where "
        "the registry names one for the pass's codec (closer to the scene at tile boundaries), else the codec's "
        "own; codec = the codec's own synthesis (the mosaic products made before); part of the product version")
    cog: bool = Field(False, description="also write a Cloud-Optimized GeoTIFF beside the product, "
                      "PRODUCTS/PASS_ID/VERSION.enhanced.tif (.decoded.tif for a decoded-only product): RGB, "
                      "valid as its internal mask, overviews; listed in the STAC Item (--cog)")

    @field_validator("codec", "enhancer")
    @classmethod
    def _checkpoint_under_roots(cls, v: str | None, info) -> str | None:
        return checked_model(info.field_name, v)  # a file from the UI: under the weights or runs root

    @field_validator("temperature", "strength")
    @classmethod
    def _named_exactly(cls, v: float | None) -> float | None:
        # the product version writes these with 6 significant digits: two values that print alike would share a
        # product (and resume one into the other)
        if v is not None and float(format(v, "g")) != v:
            raise ValueError(f"{v!r} has more than 6 significant digits; round it (the product version names it "
                             f"as {format(v, 'g')})")
        return v

    @field_validator("halo")
    @classmethod
    def _even_halo(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"halo {v} must be even (enhancement windows start on the 2x2 Haar grid)")
        return v

    @classmethod
    def stored(cls, options: dict) -> "ProcessOptions":
        """The options a product's run stored (``gsp_run.options``), read back with what older runs did not write:
        a product made before the mosaic decode mode was decoded tile by tile; one made before the tuned mosaic
        synthesis by the codec's own g_s; one made before the strength knob kept all of the enhancer's change
        (its version has no ``-a`` part), whatever strength the registry's rate point has now."""
        return cls.model_validate({"decode_mode": "tile", "mosaic_synthesis": "codec", "strength": 1.0, **options})

    @classmethod
    def build(cls, **kwargs) -> "ProcessOptions":
        """Like the constructor, for the command line: a bad value is a ConfigError naming the option to change
        as the operator types it (``--tiles-per-batch``); the UI's form validates the model itself."""
        try:
            return cls(**{k: v for k, v in kwargs.items() if v is not None})
        except ValidationError as exc:
            msgs = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
            raise ConfigError(f"invalid processing option: {msgs}") from None


def station_options(**overrides) -> ProcessOptions:
    """The options a run gets when none are given: the model defaults with the station file's pixel synthesis
    and decode mode (``decode.synthesis``, ``decode.mode``), as ``gsp process`` fills them."""
    from groundstation.config import load_station

    decode = load_station().decode
    return ProcessOptions(**{"synthesis": decode.synthesis, "decode_mode": decode.mode, **overrides})
