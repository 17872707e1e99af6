"""What the batch tasks return: one typed result per stage, the same object in the flow and in a done marker.

A task returns its result object to the flow and writes it (``to_json``) into the batch's done marker; a resumed
run reads the marker back with ``from_json``, so the flow only ever sees these types, never loose dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from groundstation.decode import TileOutcome
from groundstation.metrics import TileMetrics

__all__ = ["DecodeResult", "EnhanceResult", "EnhancedTile", "EvaluateResult", "RESULT_TYPES", "SynthesisResult",
           "result_from_json"]


@dataclass(frozen=True)
class DecodeResult:
    """A decode batch: one outcome per tile (``ok`` or why it was lost), where it ran."""

    outcomes: tuple[TileOutcome, ...]
    worker: str = ""
    device: str = "cpu"  # where g_s ran (entropy decoding is always on the CPU)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"outcomes": [asdict(o) for o in self.outcomes], "worker": self.worker, "device": self.device,
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict) -> "DecodeResult":
        known = {f.name for f in fields(TileOutcome)}
        return cls(outcomes=tuple(TileOutcome(**{k: v for k, v in o.items() if k in known})
                                  for o in data["outcomes"]),
                   worker=data.get("worker", ""), device=data.get("device", "cpu"),
                   seconds=float(data.get("seconds", 0.0)))


@dataclass(frozen=True)
class SynthesisResult:
    """A synthesis batch (decode mode ``mosaic``): the core tiles it wrote, the g_s time per decoded tile."""

    tiles: tuple[int, ...]
    ms: dict[int, float] = field(default_factory=dict)  # decoded core tile -> its share of the windows' g_s time
    worker: str = ""
    device: str = "cpu"
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"tiles": list(self.tiles), "ms": {str(t): v for t, v in self.ms.items()}, "worker": self.worker,
                "device": self.device, "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict) -> "SynthesisResult":
        return cls(tiles=tuple(int(t) for t in data["tiles"]),
                   ms={int(t): float(v) for t, v in (data.get("ms") or {}).items()},
                   worker=data.get("worker", ""), device=data.get("device", "cpu"),
                   seconds=float(data.get("seconds", 0.0)))


@dataclass(frozen=True)
class EnhancedTile:
    """One codec tile covered by an enhancement batch: ``ok`` or ``no_valid_pixels``, and its share of the time."""

    tile: int
    status: str
    enhance_ms: float = 0.0


@dataclass(frozen=True)
class EnhanceResult:
    tiles: tuple[EnhancedTile, ...]
    device: str = ""
    worker: str = ""
    windows: int = 0
    pixels_read: int = 0

    def to_json(self) -> dict:
        return {"tiles": [asdict(t) for t in self.tiles], "device": self.device, "worker": self.worker,
                "windows": self.windows, "pixels_read": self.pixels_read}

    @classmethod
    def from_json(cls, data: dict) -> "EnhanceResult":
        return cls(tiles=tuple(EnhancedTile(t["tile"], t["status"], t.get("enhance_ms", 0.0)) for t in data["tiles"]),
                   device=data.get("device", ""), worker=data.get("worker", ""), windows=int(data.get("windows", 0)),
                   pixels_read=int(data.get("pixels_read", 0)))


@dataclass(frozen=True)
class EvaluateResult:
    """Full-reference metrics rows (one per tile and product) and the perceptual metric's description."""

    rows: tuple[TileMetrics, ...]
    perceptual: str | None = None
    metric_device: str = ""
    worker: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"rows": [asdict(r) for r in self.rows], "perceptual": self.perceptual,
                "metric_device": self.metric_device, "worker": self.worker, "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict) -> "EvaluateResult":
        init = {f.name for f in fields(TileMetrics) if f.init}
        rows = tuple(TileMetrics(**{k: v for k, v in r.items() if k in init}) for r in data["rows"])
        return cls(rows=rows, perceptual=data.get("perceptual"), metric_device=data.get("metric_device", ""),
                   worker=data.get("worker", ""), seconds=float(data.get("seconds", 0.0)))


#: The result type of each stage (for done markers).
RESULT_TYPES = {"decode": DecodeResult, "synthesize": SynthesisResult, "enhance": EnhanceResult,
                "evaluate": EvaluateResult}


def result_from_json(stage: str, data: dict):
    """The typed result of a ``stage`` batch from its done marker's ``result``; ValueError when it does not fit."""
    try:
        return RESULT_TYPES[stage].from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{stage} marker result does not fit {RESULT_TYPES[stage].__name__}: {exc}") from None
