"""What the perception-distortion sweep varies: the decoded image, the enhancer at each operating point (temperature
and strength, the two operating knobs), and two trivial controls swept in strength, Gaussian noise and an unsharp mask (:class:`SweepSpec`,
:class:`Variant`, :func:`make_variant`); the command line's value lists (:func:`parse_values`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from groundstation.errors import ConfigError

__all__ = ["CONTROLS", "DEFAULT_NOISE", "DEFAULT_STRENGTHS", "DEFAULT_TEMPERATURES", "DEFAULT_UNSHARP", "FAMILIES", "RULE_MAX_COST_DB",
           "SweepSpec", "Variant", "add_gaussian_noise", "make_variant", "noise_seed", "parse_values",
           "unsharp_mask"]

DEFAULT_TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_STRENGTHS = (1.0,)  # all of the enhancer's change
DEFAULT_NOISE = (2.0, 3.0, 4.0, 6.0)  # DN std
DEFAULT_UNSHARP = (50.0, 100.0, 150.0, 250.0)  # percent amount
DEFAULT_UNSHARP_RADIUS = 1.0
VGG_MODES = ("none", "enhanced", "all")

FAMILIES = ("decoded", "enhanced", "noise", "unsharp")
CONTROLS = {"noise": "Gaussian noise", "unsharp": "unsharp mask"}


@dataclass(frozen=True)
class Variant:
    """One variant of the decoded image: ``family`` (decoded, enhanced, noise, unsharp) at ``strength``
    (temperature, noise std in DN, unsharp amount in percent); ``radius`` for the unsharp mask;
    ``enhancer_strength`` for the enhancer: the fraction of its change kept (``enhanced:T=0:a=0.8``)."""

    family: str
    strength: float = 0.0
    radius: float = 0.0
    enhancer_strength: float = 1.0

    @property
    def label(self) -> str:
        if self.family == "decoded":
            return "decoded"
        if self.family == "enhanced":
            return f"enhanced:T={self.strength:g}" + ("" if self.enhancer_strength == 1 else
                                                       f":a={self.enhancer_strength:g}")
        if self.family == "noise":
            return f"noise:{self.strength:g}"
        return f"unsharp:r{self.radius:g}:{self.strength:g}"


def parse_values(text: str, option: str, *, positive: bool = False, integer: bool = False,
                 allow_none: bool = False) -> tuple[float, ...]:
    """Comma-separated numbers of a command-line option, sorted and deduplicated; a ConfigError naming the option
    for anything else. ``allow_none``: ``none`` (or an empty text) means no value at all."""
    text = (text or "").strip()
    if allow_none and text.lower() in ("", "none"):
        return ()
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            v = float(item)
        except ValueError:
            raise ConfigError(f"{option} {text}: {item!r} is not a number; give comma-separated numbers like "
                              f"0,0.5,1{' (or none)' if allow_none else ''}") from None
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise ConfigError(f"{option} {text}: {item} is out of range; give finite values "
                              f"{'> 0' if positive else '>= 0'}")
        if integer and v != round(v):
            raise ConfigError(f"{option} {text}: {item} is not a whole number (PIL's unsharp amount is in whole "
                              "percent)")
        values.append(v)
    if not values:
        raise ConfigError(f"{option}: give at least one value")
    return tuple(sorted(set(values)))


#: The operating-point rule (docs/evaluation.md): per rate point, among the swept operating points (temperature,
#: strength) whose mean PSNR cost is at most this many dB, the one with the lowest mean perceptual distance; if none
#: qualifies, the cheapest. Run it on the selection subset only; the registry records its choice. The default is
#: the ST-LPIPS rule's (0.6 dB, benchmarks/results/evaluation-v3/RULE.md); the LPIPS-Alex rule passes
#: --rule-max-cost (the README's command).
RULE_MAX_COST_DB = 0.6


@dataclass(frozen=True)
class SweepSpec:
    """What the sweep covers: the enhancer's temperatures (none: only each rate point's operating point, which is
    always swept) at each of its ``strengths``, the noise stds (DN), the unsharp amounts (percent) at
    ``unsharp_radius``, and which variants also get ST-LPIPS VGG (``none``; ``enhanced``: decoded and enhanced;
    ``all``)."""

    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    noise: tuple[float, ...] = DEFAULT_NOISE
    unsharp: tuple[float, ...] = DEFAULT_UNSHARP
    unsharp_radius: float = DEFAULT_UNSHARP_RADIUS
    vgg: str = "enhanced"
    rule_max_cost_db: float = RULE_MAX_COST_DB
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS

    def __post_init__(self) -> None:
        if not self.strengths:
            raise ConfigError("--strengths: give at least one fraction of the enhancer's change in (0, 1]")
        from enhancer.inference import check_strength

        for a in self.strengths:
            try:
                check_strength(a, "--strengths")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not self.temperatures and tuple(self.strengths) != DEFAULT_STRENGTHS:
            raise ConfigError("--strengths are swept at each of --temperatures; with --temperatures none only each "
                              "rate point's registry operating point is swept: give temperatures, or leave out "
                              "--strengths")
        if any(not (math.isfinite(t) and t >= 0) for t in self.temperatures):
            raise ConfigError(f"--temperatures {self.temperatures}: give finite values >= 0")
        if any(not (math.isfinite(s) and s > 0) for s in self.noise):
            raise ConfigError(f"--noise {self.noise}: give finite noise stds > 0 (DN)")
        if any(not (math.isfinite(a) and a > 0 and a == round(a)) for a in self.unsharp):
            raise ConfigError(f"--unsharp {self.unsharp}: give whole percent amounts > 0")
        if not (math.isfinite(self.unsharp_radius) and self.unsharp_radius > 0):
            raise ConfigError(f"--unsharp-radius {self.unsharp_radius}: give a radius > 0 (pixels)")
        if not (math.isfinite(self.rule_max_cost_db) and self.rule_max_cost_db > 0):
            raise ConfigError(f"--rule-max-cost {self.rule_max_cost_db}: give a PSNR cost > 0 (dB)")
        if self.vgg not in VGG_MODES:
            raise ConfigError(f"--sweep-vgg {self.vgg}: choose one of {', '.join(VGG_MODES)}")

    @property
    def vgg_families(self) -> tuple[str, ...]:
        return {"none": (), "enhanced": ("decoded", "enhanced"), "all": FAMILIES}[self.vgg]

    def variants(self, chosen_temperature: float, chosen_strength: float = 1.0) -> list[Variant]:
        """Every variant for a rate point whose registry operating point is (``chosen_temperature``,
        ``chosen_strength``), always swept: each temperature at each strength."""
        pairs = {(float(t), float(a)) for t in self.temperatures for a in self.strengths}
        pairs = sorted(pairs | {(float(chosen_temperature), float(chosen_strength))}, key=lambda p: (-p[1], p[0]))
        return ([Variant("decoded")] + [Variant("enhanced", t, enhancer_strength=a) for t, a in pairs]
                + [Variant("noise", s) for s in sorted(set(self.noise))]
                + [Variant("unsharp", a, self.unsharp_radius) for a in sorted(set(self.unsharp))])


def noise_seed(name: str) -> int:
    """The noise seed of an image: its name's last four bytes, little-endian."""
    return int.from_bytes(name.encode()[-4:], "little")


def add_gaussian_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """uint8 image plus Gaussian noise of std ``sigma`` DN, clipped to [0, 255] and rounded."""
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).round().astype(np.uint8)


def unsharp_mask(image: np.ndarray, radius: float, percent: float) -> np.ndarray:
    """PIL's unsharp mask (threshold 0) of a uint8 RGB image."""
    from PIL import Image, ImageFilter

    f = ImageFilter.UnsharpMask(radius=radius, percent=int(round(percent)), threshold=0)
    return np.asarray(Image.fromarray(image).filter(f))


def make_variant(variant: Variant, decoded: np.ndarray, *, name: str, model=None, seed: int = 0) -> np.ndarray:
    """The uint8 image of ``variant`` made from ``decoded`` (``model``: the enhancer, for ``enhanced``)."""
    if variant.family == "decoded":
        return decoded
    if variant.family == "enhanced":
        from enhancer.inference import enhance_array

        return enhance_array(model, decoded, seed=seed, temperature=variant.strength,
                             strength=variant.enhancer_strength)
    if variant.family == "noise":
        return add_gaussian_noise(decoded, variant.strength, noise_seed(name))
    if variant.family == "unsharp":
        return unsharp_mask(decoded, variant.radius, variant.strength)
    raise ValueError(f"unknown variant family {variant.family!r}")
