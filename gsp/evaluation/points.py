"""The rate points an evaluation runs: each a codec, the enhancer trained behind it and its operating point
(temperature, strength; ``configs/models.yaml`` ``rate_points``), with files resolved and hashes checked."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from groundstation.errors import ConfigError

__all__ = ["ResolvedPoint", "resolve_rate_points"]


@dataclass(frozen=True)
class ResolvedPoint:
    """A rate point with its files resolved and hashes checked."""

    name: str
    codec: str
    codec_path: str
    codec_sha256: str | None
    enhancer: str
    enhancer_path: str
    enhancer_sha256: str | None
    temperature: float
    lmbda: float | None
    strength: float = 1.0  # the fraction of the enhancer's change kept (enhancer.inference.blend_)

    @property
    def operating_label(self) -> str:
        """``T=0.375`` (strength 1), ``T=0:a=0.8``: the operating point as the tables and labels write it."""
        return f"T={self.temperature:g}" + ("" if self.strength == 1 else f":a={self.strength:g}")


def resolve_rate_points(names: Iterable[str] | None = None, registry=None, temperature: float | None = None,
                        enhancer: str | None = None, strength: float | None = None) -> list[ResolvedPoint]:
    """The registry's rate points (all, or ``names`` in that order); a clear error for an unknown name.

    ``temperature`` and ``strength`` replace every point's own (to evaluate another operating point); ``enhancer`` (a registry
    name or a checkpoint file, loaded with the registry's checks) replaces the enhancer of the one rate point
    ``names`` gives (to evaluate a training run, e.g. an ablation, beside the registry's)."""
    if temperature is not None and not (temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(f"--temperature {temperature}: give a finite value >= 0")
    if strength is not None:
        from enhancer.inference import check_strength

        try:
            check_strength(strength, "--strength")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    from groundstation.registry import load_registry, resolve_model

    registry = registry or load_registry()
    wanted = list(names) if names else list(registry.rate_points)
    if not wanted:
        raise ConfigError("the model registry defines no rate_points; add codec/enhancer pairs under "
                          "rate_points in configs/models.yaml")
    if enhancer is not None and (not names or len(wanted) != 1):
        raise ConfigError(f"--enhancer {enhancer}: an enhancer is trained behind one codec; name its rate point "
                          f"alone with --rate-points (one of {', '.join(registry.rate_points)})")
    points = []
    for name in wanted:
        point = registry.rate_points.get(name)
        if point is None:
            raise ConfigError(f"--rate-points: no rate point named {name!r}; known: "
                              f"{', '.join(registry.rate_points) or 'none'} (configs/models.yaml)")
        _, cpath, csha, centry = resolve_model(point.codec, "codec", registry)
        ename, epath, esha, _ = resolve_model(enhancer or point.enhancer, "enhancer", registry)
        if esha is None:  # a file outside the registry: its digest keys the rows, so a rerun never mixes files
            from groundstation.fileio import sha256_file

            esha = sha256_file(epath)
        points.append(ResolvedPoint(name=name, codec=point.codec, codec_path=str(cpath), codec_sha256=csha,
                                    enhancer=ename if enhancer else point.enhancer, enhancer_path=str(epath),
                                    enhancer_sha256=esha,
                                    temperature=point.temperature if temperature is None else temperature,
                                    lmbda=centry.lmbda if centry else None,
                                    strength=point.strength if strength is None else strength))
    return points
