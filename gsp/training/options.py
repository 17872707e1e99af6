"""The options of the two training jobs, one typed model each: ``gsp train-codec`` / ``gsp train-enhancer``, their
deployments in the UI (:mod:`gsp.jobs`) and the enhancer recipes (``configs/enhancer-recipes/*.yaml``) all build
the same :class:`CodecTrainOptions` / :class:`EnhancerTrainOptions`. Light: pydantic only (no torch), so the
command line shows the defaults without importing the trainers.

A checkpoint path in the options (``init_from``, ``init``) is checked against the station's roots when they are
in force (:mod:`flows.access`: runs a deployment started, or ``roots.enforce: always``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from groundstation.errors import ConfigError, GSPError

#: L_per backends, the one list (gsp.training.perceptual builds them; the CLI offers them). ``lpips-alex`` trains on the
#: evaluation's own metric: an experiment only (docs/evaluation.md, "What moves the trade-off"); no recipe uses it.
PERCEPTUAL_BACKENDS = ("auto", "vgg19", "stlpips-vgg", "lpips-vgg", "lpips-alex", "none")

__all__ = ["CodecTrainConfig", "CodecTrainOptions", "EnhancerTrainOptions", "INITS", "load_recipe", "options_error"]

log = logging.getLogger(__name__)

#: The named starting points of an enhancer run; anything else is an enhancer checkpoint to fine-tune.
INITS = ("reference", "identity")


def _checkpoint_under_roots(param: str, value: str | None) -> str | None:
    from flows.access import checked

    return checked(param, value, "checkpoint") if value else value


def options_error(exc: ValidationError, command: str) -> ConfigError:
    """A pydantic validation error as the operator reads it: the option (``--batch-size``) and what is wrong."""
    parts = []
    for err in exc.errors():
        name = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-") if err["loc"] else command
        value = f" {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
        parts.append(f"{name}{value}: {err['msg']}")
    return ConfigError(f"gsp {command}: " + "; ".join(parts))


class CodecTrainOptions(BaseModel):
    """The options of ``gsp train-codec`` (same names, same defaults, see its --help)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    N: int = Field(96, ge=1, description="main channels (192 = the paper's size)")
    M: int = Field(192, ge=1, description="latent channels (320 = the paper's size)")
    groups: list[int] = Field(default_factory=list, description="channel groups summing to M (empty: the default)")
    lmbda: float = Field(0.0032, gt=0, description="loss = lambda * 255^2 * MSE + bpp")
    steps: int = Field(4000, ge=1, description="total steps (a rerun with more steps continues)")
    batch_size: int = Field(8, ge=1)
    crop: int = Field(128, ge=64, description="square crop size")
    lr: float = Field(2e-4, gt=0)
    lr_drop_at: int = Field(3200, ge=0, description="step from which lr is divided by 10")
    aux_lr: float = Field(1e-3, gt=0)
    clip: float = Field(1.0, ge=0, description="max gradient norm, 0 = off")
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch threads (default: torch's choice)")
    init_from: str | None = Field(
        None, description="start a new run from the weights of another run's last.pt (ignored on resume)")

    @field_validator("init_from")
    @classmethod
    def _init_from_under_roots(cls, v: str | None) -> str | None:
        return _checkpoint_under_roots("options.init_from", v)

    @classmethod
    def from_registry(cls) -> "CodecTrainOptions":
        """The defaults with the size and lambda of the registry's default codec (a codec like the station's)."""
        from groundstation.registry import load_registry

        defaults = cls()
        try:
            reg = load_registry()
            entry = reg.models[reg.default_codec]
            arch = entry.arch
            return cls(N=arch.get("N", defaults.N), M=arch.get("M", defaults.M),
                       groups=list(arch.get("groups") or []), lmbda=entry.lmbda or defaults.lmbda)
        except (GSPError, KeyError, ValueError) as exc:
            log.debug("codec defaults from the registry: %s", exc)
            return defaults

    def config(self, data: list[str], out: str) -> "CodecTrainConfig":
        return CodecTrainConfig(data=list(data), out=str(out), **self.model_dump())


class CodecTrainConfig(CodecTrainOptions):
    """One codec training run: its options, the image folders and the run folder (``OUT/config.json``)."""

    data: list[str]
    out: str

    def arch(self):
        from groundstation.codec import CodecArch

        return CodecArch(self.N, self.M, tuple(self.groups)) if self.groups else CodecArch.default_groups(self.N, self.M)


class EnhancerTrainOptions(BaseModel):
    """The options of ``gsp train-enhancer`` and of an enhancer recipe; those left unset (null) take the preset's
    value (:func:`gsp.training.enhancer.training_config`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

    preset: Literal["reference-code", "paper"] = "reference-code"
    arch: str = Field("reference", validation_alias=AliasChoices("arch", "config"),
                      description="demo | reference | blocks,coupling_growth,cgm_growth (e.g. 3,16,16)")
    steps: int | None = Field(None, ge=1, description="total steps (a rerun with more steps continues)")
    batch_size: int | None = Field(None, ge=1)
    crop: int | None = Field(None, ge=2, multiple_of=2)
    lr: float | None = Field(None, gt=0)
    lr_step: int | None = Field(None, ge=1, description="halve the lr every N steps")
    clip: float | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    w_dec: float | None = Field(None, ge=0)
    w_case: float | None = Field(None, ge=0)
    w_en: float | None = Field(None, ge=0)
    w_per: float | None = Field(None, ge=0)
    reduction: Literal["sum", "per-image", "mean"] | None = None
    case_reduction: Literal["sum", "per-image", "mean"] | None = None
    case_form: Literal["sq", "nll"] | None = None
    qm_noise_p: float | None = Field(None, ge=0, le=1)
    qm_noise: float | None = Field(None, ge=0)
    perceptual: Literal[PERCEPTUAL_BACKENDS] = "auto"
    per_block: Literal[4, 5] | None = None
    transpose: bool | None = None
    init: str = Field("reference", description="reference | identity | an enhancer checkpoint (.pt) to fine-tune")
    latent_gain: float | None = Field(None, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(1000, ge=1)
    threads: int | None = Field(None, ge=1)
    device: str = Field("cpu", description="cpu, cuda, cuda:1 ...")

    @field_validator("init")
    @classmethod
    def _init_file_under_roots(cls, v: str) -> str:
        return v if v in INITS else _checkpoint_under_roots("options.init", v)

    @classmethod
    def from_registry(cls) -> "EnhancerTrainOptions":
        """The defaults with the architecture of the registry's default enhancer."""
        from groundstation.registry import load_registry

        try:
            reg = load_registry()
            arch = reg.models[reg.default_enhancer].arch if reg.default_enhancer else None
            if arch:
                return cls(arch=f"{arch['blocks']},{arch['coupling_growth']},{arch['cgm_growth']}")
        except (GSPError, KeyError, ValueError) as exc:
            log.debug("enhancer defaults from the registry: %s", exc)
        return cls()

    # the run's full configuration: gsp.training.enhancer.config_from_options (the trainer depends on these
    # options, not the other way round)


#: What a recipe may name besides the options: the run's paths and whether to train (as ``gsp train-enhancer``
#: takes them).
RECIPE_RUN_KEYS = ("pairs", "out", "export", "no_train")


def load_recipe(path: str | Path) -> dict:
    """An enhancer recipe: a mapping of ``gsp train-enhancer`` options (``batch-size`` or ``batch_size``;
    ``config`` is the architecture) and the run's ``pairs``, ``out``, ``export``, ``no-train``. Returns it with underscore
    names, its options checked against :class:`EnhancerTrainOptions` (an unknown key or a bad value is a
    ConfigError naming the file)."""
    from groundstation.registry import load_yaml

    recipe = load_yaml(path)
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of train-enhancer options")
    known = set(EnhancerTrainOptions.model_fields) | {"config"} | set(RECIPE_RUN_KEYS)
    values = {}
    for key, value in recipe.items():
        dest = str(key).replace("-", "_")
        if dest not in known or dest == "arch":
            raise ConfigError(f"{path}: {key!r} is not an option of gsp train-enhancer")
        values[dest] = value
    try:
        EnhancerTrainOptions.model_validate({k: v for k, v in values.items() if k not in RECIPE_RUN_KEYS})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {options_error(exc, 'train-enhancer')}") from None
    return values
