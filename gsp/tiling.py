"""How images are coded for evaluation and training pairs: whole (the paper's protocol) or in codec tiles decoded
as the station decodes a pass (``--tile-size`` / ``--decode-mode`` of ``gsp evaluate`` and ``gsp make-pairs``)."""

from __future__ import annotations

from dataclasses import dataclass

from groundstation.errors import ConfigError

__all__ = ["WHOLE", "Tiling"]


@dataclass(frozen=True)
class Tiling:
    """How the images are coded: whole (``tile_size`` 0, the paper's protocol) or in codec tiles of
    ``tile_size`` px decoded in ``decode_mode`` (the station's protocol); see :mod:`gsp.evaluation.running`."""

    tile_size: int = 0
    decode_mode: str = "mosaic"

    def __post_init__(self) -> None:
        from groundstation.codec import CODEC_ALIGN
        from groundstation.synthesis import DECODE_MODES

        if self.tile_size < 0 or self.tile_size % CODEC_ALIGN:
            raise ConfigError(f"--tile-size {self.tile_size}: give a positive multiple of {CODEC_ALIGN} px (the "
                              "station codes 256 px tiles), or leave it out to code whole images")
        if self.decode_mode not in DECODE_MODES:
            raise ConfigError(f"--decode-mode {self.decode_mode}: one of {', '.join(DECODE_MODES)}")

    @classmethod
    def of(cls, tile_size: int = 0, decode_mode: str | None = None) -> "Tiling":
        """From ``--tile-size`` / ``--decode-mode`` (None: the station's ``decode.mode``)."""
        from groundstation.config import load_station

        if decode_mode and not tile_size:
            raise ConfigError("--decode-mode only applies to tiled coding: add --tile-size 256")
        return cls(tile_size, decode_mode or load_station().decode.mode)

    @property
    def label(self) -> str:
        """The ``tiling`` column: ``whole`` or e.g. ``256px mosaic``."""
        return f"{self.tile_size}px {self.decode_mode}" if self.tile_size else "whole"

    def label_for(self, codec_sha256: str | None) -> str:
        """:attr:`label`, naming the registry's g_s for mosaic synthesis when this codec has one (its pixels
        differ from the codec's own g_s), e.g. ``256px mosaic g_s 1a2b3c4d``: what rows and pairs record."""
        from groundstation.registry import mosaic_g_s_sha256

        sha = mosaic_g_s_sha256(codec_sha256) if self.tile_size and self.decode_mode == "mosaic" and codec_sha256 \
            else None
        return f"{self.label} g_s {sha[:8]}" if sha else self.label

    def roundtrip(self, tc, image, *, what: str = "image"):
        """(decoded (H, W, 3) uint8, bytes) of ``image`` after a real ELIC compress and decompress with ``tc`` (a
        :class:`groundstation.codec.TileCodec`): whole, or tile by tile as the station decodes a pass. A
        persistent desync is a :class:`~groundstation.errors.DesyncError`."""
        from groundstation.synthesis import roundtrip_tiled

        if self.tile_size:
            return roundtrip_tiled(tc, image, self.tile_size, self.decode_mode, what=what)
        decoded, enc, _ = tc.roundtrip(image, what=what)
        return decoded, enc.nbytes


#: The paper's protocol: every image coded whole.
WHOLE = Tiling()
