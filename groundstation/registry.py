"""The model registry (``configs/models.yaml``): every checkpoint a flow may use, by name.

Weights are data: each entry is a frozen record (path relative to the repository, sha256, architecture
parameters, lambda, provenance). Flows and commands name a model; a path to a checkpoint file is also accepted
where an operator tries something new, and its sha256 is then computed, not trusted.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY = REPO_ROOT / "configs" / "models.yaml"


class SidecarRef(BaseModel):
    """A small file that belongs to a checkpoint (a codec's integer prior), by path and sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def resolved_path(self) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else REPO_ROOT / p


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["codec", "enhancer"]
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    architecture: str
    arch: dict
    lmbda: float | None = None
    codec: str | None = None  # an enhancer names the codec (rate point) it was trained behind
    provenance: str = ""
    card: str | None = None  # model card (markdown), relative to the repository
    #: a codec's integer prior (the ``int`` entropy mode; groundstation/intprior.py)
    int_prior: SidecarRef | None = None
    #: a codec's g_s fine-tuned for synthesis over the latent mosaic (decode mode ``mosaic``;
    #: groundstation/synthesis.py, benchmarks/gs_mosaic_finetune.py); the symbols never involve it
    mosaic_synthesis: SidecarRef | None = None

    def resolved_path(self) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else REPO_ROOT / p


class RatePoint(BaseModel):
    """One point of the rate-distortion-perception curves: a codec, the enhancer trained behind it and its
    operating point, chosen on the validation set's selection subset (the only thing chosen there): the
    temperature of the latent and the strength, the fraction of the enhancer's change the product keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codec: str
    enhancer: str
    temperature: float = Field(default=0.0, ge=0.0)
    strength: float = Field(default=1.0, gt=0.0, le=1.0)


class OperatingPoint(NamedTuple):
    """Where an enhancer runs: ``temperature``, ``strength`` and what decided them: ``rate_point`` (the name of
    the rate point whose operating point it is; None for an enhancer that is no rate point's) and ``given`` (the
    knobs the caller set, which always win)."""

    rate_point: str | None
    temperature: float
    strength: float
    given: tuple[str, ...] = ()

    def describe(self) -> str:
        """What decided it, for a log line: ``temperature 0.375 and strength 1: the operating point of ...``."""
        rest = [k for k in ("temperature", "strength") if k not in self.given]
        given = " and ".join(f"{k} {getattr(self, k):g}" for k in self.given)
        if not rest:
            return f"{given} (as given)"
        said = " and ".join(f"{k} {getattr(self, k):g}" for k in rest)
        if self.rate_point is None:
            why = {"temperature": "the deterministic mean", "strength": "all of its change"}
            said += (": the enhancer is no rate point of the registry ("
                     + ", ".join(why[k] for k in rest) + ")")
        else:
            said += f": the operating point of rate point {self.rate_point}"
        return said + (f"; {given} as given" if given else "")


#: Temperature of an enhancer that is no rate point's (a checkpoint from elsewhere): the deterministic mean.
FALLBACK_TEMPERATURE = 0.0


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_codec: str
    default_enhancer: str | None = None
    models: dict[str, ModelEntry]
    rate_points: dict[str, RatePoint] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _defaults_exist(self) -> "Registry":
        for name, kind in ((self.default_codec, "codec"), (self.default_enhancer, "enhancer")):
            if name is None:
                continue
            if name not in self.models or self.models[name].kind != kind:
                raise ValueError(f"default {kind} {name!r} is not a {kind} entry of the registry")
        for name, entry in self.models.items():
            if entry.codec and entry.codec not in self.models:
                raise ValueError(f"{name}: names codec {entry.codec!r}, which is not in the registry")
        for name, point in self.rate_points.items():
            for model, kind in ((point.codec, "codec"), (point.enhancer, "enhancer")):
                if model not in self.models or self.models[model].kind != kind:
                    raise ValueError(f"rate point {name!r}: {kind} {model!r} is not a {kind} entry of the registry")
            trained_behind = self.models[point.enhancer].codec
            if trained_behind and trained_behind != point.codec:
                raise ValueError(f"rate point {name!r}: enhancer {point.enhancer!r} was trained behind "
                                 f"{trained_behind!r}, not {point.codec!r}")
        return self

    def operating_point(self, enhancer_sha256: str, temperature: float | None = None,
                        strength: float | None = None) -> OperatingPoint:
        """Where this enhancer checkpoint runs, each knob on its own: ``temperature`` and ``strength`` as given,
        else those of the rate point whose enhancer it is (chosen on a validation subset, docs/evaluation.md),
        else :data:`FALLBACK_TEMPERATURE` and strength 1 (all of the enhancer's change). The one rule for
        ``gsp process``, the flows, the demo and ``gsp enhance``."""
        given = tuple(k for k, v in (("temperature", temperature), ("strength", strength)) if v is not None)
        for name, point in self.rate_points.items():
            if self.models[point.enhancer].sha256 == enhancer_sha256:
                return OperatingPoint(name, point.temperature if temperature is None else temperature,
                                      point.strength if strength is None else strength, given)
        return OperatingPoint(None, FALLBACK_TEMPERATURE if temperature is None else temperature,
                              1.0 if strength is None else strength, given)

    def get(self, name: str, kind: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None or entry.kind != kind:
            names = sorted(n for n, e in self.models.items() if e.kind == kind)
            raise ConfigError(f"no {kind} named {name!r} in the registry; known: {', '.join(names) or 'none'}")
        return entry


def _check_unique_keys(loader, node, deep=False):
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise ConfigError(f"duplicate name {key!r} in {loader.name}: refusing to let one entry overwrite another")
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _check_unique_keys)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    with open(path) as f:
        try:
            data = yaml.load(f, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return data or {}


@lru_cache(maxsize=8)
def load_registry(path: str | Path = DEFAULT_REGISTRY) -> Registry:
    try:
        return Registry.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid model registry: {exc}") from exc


def mosaic_synthesis_for(codec_sha256: str, registry: Registry | None = None) -> SidecarRef | None:
    """The g_s fine-tuned for mosaic synthesis that the registry names for the codec with this sha256, or None
    (the codec's own g_s is used)."""
    registry = registry or load_registry()
    for entry in registry.models.values():
        if entry.kind == "codec" and entry.sha256 == codec_sha256 and entry.mosaic_synthesis is not None:
            return entry.mosaic_synthesis
    return None


def mosaic_g_s_sha256(codec_sha256: str) -> str | None:
    """sha256 of the registry's g_s for mosaic synthesis of this codec (``TileCodec(mosaic_g_s=...)``), or None."""
    ref = mosaic_synthesis_for(codec_sha256)
    return ref.sha256 if ref else None


def resolve_model(name_or_path: str | None, kind: str, registry: Registry | None = None) -> tuple[str, Path, str | None, ModelEntry | None]:
    """(display name, checkpoint path, expected sha256 or None, registry entry or None).

    A value that looks like a checkpoint file (``.pt``/``.pth``... or an existing path) is used as a file and
    needs no registry; anything else must be a registry name.
    """
    if name_or_path is not None:
        p = Path(name_or_path)
        if p.suffix in (".pt", ".pth", ".tar", ".ckpt") or p.exists():
            if not p.is_file():
                raise ConfigError(f"{p}: checkpoint file not found")
            return p.name, p, None, None
    registry = registry or load_registry()
    if name_or_path is None:
        name_or_path = registry.default_codec if kind == "codec" else registry.default_enhancer
        if name_or_path is None:
            raise ConfigError(f"no default {kind} in the registry; name one")
    entry = registry.get(name_or_path, kind)
    return name_or_path, entry.resolved_path(), entry.sha256, entry
