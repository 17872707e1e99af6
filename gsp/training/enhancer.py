"""Training the INN-RSIC enhancer on ELIC pairs, with resume, a loss log, a loss curve and an export.

The losses (docs/method.md, "Training, as coded"; paper sec. 3.2), for a batch of ground truth ``x`` and
its ELIC-decoded version ``x_elic``, with ``[s, z] = f(x)`` (:meth:`INNRSIC.forward`):

* ``L_dec  = ||s - x_elic||^2``                          (before QM)
* ``L_case = ||z||^2``                                   (paper: -log p(z) = 0.5 ||z||^2 + M/2 log 2 pi)
* ``L_en   = ||f^-1(QM(s) [+ n], z')[:3] - x||^2``       n = 0.01 N(0, I) with probability 0.5 (per batch),
  z' ~ N(0, I) drawn afresh
* ``L_per  = ||Phi(x_hat) - Phi(x)||^2``                  Phi: VGG19 conv5_4 pre-ReLU (:mod:`gsp.training.perceptual`)

``total = w_dec L_dec + w_case L_case + w_en L_en + w_per L_per``. How each squared error is reduced:

* ``sum``: over batch and all elements (the reference's ``torch.mean(torch.sum(...))`` of a scalar);
* ``per-image``: summed over an image's elements, averaged over the batch (the reference's L_case,
  ``torch.sum(z**2) / z.shape[0]``);
* ``mean``: averaged over all elements (scale-free; the weights must then be chosen anew).

Presets (:func:`presets`, also as ``PRESETS``): ``reference-code`` reproduces the authors' S1 training exactly as their code runs it
(weights 1 / 200 / 0.05 / 1e-4 - their ``feature_weight`` 0.01 is applied twice -, ``sum`` for L_dec, L_en,
L_per and ``per-image`` for L_case, the noise on QM's output, conv5_4, transpose augmentation, 500k steps,
lr halved every 100k); ``paper`` follows the text (weights 1 / 200 / 0.05 / 0.01, L_case as the negative
log-likelihood, conv4_4, no noise after QM, flips without transpose, 300 epochs with lr halved every 60).
The paper names no reduction: ``paper`` takes each norm per image and averages over the batch; batch size,
crop and clipping are not in the text and are the code's.

Everything random in a step (the pairs, crops and flips of the batch, z', the QM noise) is a pure function of
``(seed, step)``, so a resumed run continues exactly as an uninterrupted one; a training checkpoint holds the
model, AdamW's state, the step and the run's options, as tensors and plain values (``weights_only=True``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from enhancer.checkpoint import save_enhancer
from groundstation.checkpoints import read_checkpoint
from groundstation.fileio import sha256_file

from .loop import LossLog, RunDir
from enhancer.model import INNRSIC, EnhancerConfig
from enhancer.modules import quantize
from gsp.training.pairs import PairSet
from gsp.training.options import INITS
from gsp.training.perceptual import LpipsLoss, PerceptualBackbone, build_perceptual
from groundstation.registry import REPO_ROOT, load_yaml
from groundstation.errors import CheckpointError, ConfigError, TrainingError

__all__ = [
    "CSV_COLUMNS",
    "PRESETS",
    "EnhancerTrainConfig",
    "LossConfig",
    "TrainResult",
    "TrainingError",
    "enhancer_losses",
    "export_enhancer",
    "lr_at",
    "parse_arch",
    "presets",
    "step_noise",
    "train_enhancer",
    "training_config",
]

log = logging.getLogger(__name__)

Reduction = Literal["sum", "per-image", "mean"]
REDUCTIONS = ("sum", "per-image", "mean")
CASE_FORMS = ("sq", "nll")
CHECKPOINT_FORMAT = "gsp-enhancer-train/1"
CSV_COLUMNS = ["step", "total", "l_dec", "l_case", "l_en", "l_per", "psnr_en_db", "lr", "elapsed_s"]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------------- losses

@dataclass(frozen=True)
class LossConfig:
    """Weights and reductions of the four terms; defaults are the reference code's."""

    w_dec: float = 1.0
    w_case: float = 200.0
    w_en: float = 0.05
    w_per: float = 1e-4
    reduction: Reduction = "sum"  # L_dec, L_en, L_per
    case_reduction: Reduction = "per-image"  # L_case
    case_form: Literal["sq", "nll"] = "sq"  # ||z||^2 (code) or 0.5 ||z||^2 + M/2 log(2 pi) (paper's -log p(z))
    qm_noise_p: float = 0.5
    qm_noise: float = 0.01

    def __post_init__(self) -> None:
        for name in ("w_dec", "w_case", "w_en", "w_per", "qm_noise"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("reduction", "case_reduction"):
            if getattr(self, name) not in REDUCTIONS:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose one of "
                                  f"{', '.join(REDUCTIONS)}")
        if self.case_form not in CASE_FORMS:
            raise ConfigError(f"--case-form {self.case_form!r}: choose one of {', '.join(CASE_FORMS)}")
        if not 0 <= self.qm_noise_p <= 1:
            raise ConfigError(f"--qm-noise-p must be a probability in [0, 1], got {self.qm_noise_p}")


def _reduce(err: Tensor, how: str) -> Tensor:
    if how == "sum":
        return err.sum()
    if how == "per-image":
        return err.sum() / err.shape[0]
    return err.mean()


def enhancer_losses(model: INNRSIC, x: Tensor, x_elic: Tensor, z_prime: Tensor, noise: Tensor | None,
                    loss: LossConfig, perceptual: PerceptualBackbone | LpipsLoss | None = None) -> dict[str, Tensor]:
    """The four terms (unweighted), the weighted ``total`` and ``x_hat = f^-1(QM(s) [+ noise], z')``.

    ``x``, ``x_elic``: ground truth and ELIC-decoded crops, ``z_prime``: the fresh latent (same shape),
    ``noise``: added to QM's output, or None. With ``perceptual`` None (or ``w_per`` 0) ``l_per`` is 0; an
    :class:`LpipsLoss` gives the LPIPS distance per image, summed over the batch (``sum``) or averaged.
    """
    out = model(x)
    s, z = out[:, :3], out[:, 3:]
    l_dec = _reduce((s - x_elic) ** 2, loss.reduction)
    case = z ** 2 if loss.case_form == "sq" else 0.5 * z ** 2 + _HALF_LOG_2PI
    l_case = _reduce(case, loss.case_reduction)
    y = quantize(s)  # QM: clamp, round to 1/255, straight-through gradient
    if noise is not None:
        y = y + noise
    x_hat = model.inverse(y, z_prime)
    l_en = _reduce((x_hat - x) ** 2, loss.reduction)
    if isinstance(perceptual, LpipsLoss) and loss.w_per > 0:
        d = perceptual.distance(x_hat, x)
        l_per = d.sum() if loss.reduction == "sum" else d.mean()
    elif perceptual is not None and loss.w_per > 0:
        with torch.no_grad():
            target = perceptual(x)
        l_per = _reduce((perceptual(x_hat) - target) ** 2, loss.reduction)
    else:
        l_per = torch.zeros((), device=x.device)
    total = loss.w_dec * l_dec + loss.w_case * l_case + loss.w_en * l_en + loss.w_per * l_per
    return {"total": total, "l_dec": l_dec, "l_case": l_case, "l_en": l_en, "l_per": l_per, "x_hat": x_hat}


def step_noise(seed: int, step: int, shape: tuple[int, ...], loss: LossConfig) -> tuple[Tensor, Tensor | None]:
    """``(z', QM noise or None)`` for one step: a pure function of ``(seed, step)`` (drawn on the CPU)."""
    word = int(np.random.SeedSequence([int(seed), 2, int(step)]).generate_state(1, dtype=np.uint64)[0])
    gen = torch.Generator().manual_seed(word & ((1 << 63) - 1))
    coin = float(torch.rand((), generator=gen))
    z_prime = torch.randn(shape, generator=gen)
    noise = None
    if loss.qm_noise > 0 and coin < loss.qm_noise_p:
        noise = loss.qm_noise * torch.randn(shape, generator=gen)
    return z_prime, noise


# ------------------------------------------------------------------------------------------ configuration

def parse_arch(text: str) -> EnhancerConfig:
    """``demo``, ``reference`` or ``blocks,coupling_growth,cgm_growth`` (e.g. ``2,8,8``)."""
    if text == "demo":
        return EnhancerConfig.demo()
    if text == "reference":
        return EnhancerConfig.reference()
    try:
        blocks, cg, mg = (int(v) for v in text.split(","))
        return EnhancerConfig(blocks=blocks, coupling_growth=cg, cgm_growth=mg)
    except ValueError as exc:
        raise ConfigError(f"--config {text!r}: give demo, reference or blocks,coupling_growth,cgm_growth "
                          "(three positive integers, e.g. 8,32,64)") from exc


#: Option values of the two conventions; ``epochs``/``lr_step_epochs`` are turned into steps from the number
#: of pairs and the batch size (one crop per pair per epoch) by :func:`training_config`.
#: Where the presets live (a station edits YAML, not code).
PRESETS_FILE = REPO_ROOT / "configs" / "enhancer-presets.yaml"
#: Keys a preset may set: the loss weights and conventions, the optimisation, the schedule.
PRESET_KEYS = frozenset({"w_dec", "w_case", "w_en", "w_per", "reduction", "case_reduction", "case_form",
                         "qm_noise_p", "qm_noise", "per_block", "transpose", "batch_size", "crop", "lr", "clip",
                         "weight_decay", "steps", "lr_step", "epochs", "lr_step_epochs"})


@functools.cache
def presets() -> dict[str, dict]:
    """The shipped presets (``configs/enhancer-presets.yaml``), read and checked at the first call."""
    return load_presets(PRESETS_FILE)


def __getattr__(name: str):
    if name == "PRESETS":  # the shipped presets, read when first asked for (never at import)
        return presets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_presets(path: str | Path = PRESETS_FILE) -> dict[str, dict]:
    """The presets file, checked: every preset a mapping of known keys (a typo is an error, not a default)."""
    data = load_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of preset names to options")
    for name, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: preset {name!r} is not a mapping of options")
        unknown = sorted(set(values) - PRESET_KEYS)
        if unknown:
            raise ConfigError(f"{path}: preset {name!r} has unknown options {unknown}; known: {sorted(PRESET_KEYS)}")
    return data


@dataclass
class EnhancerTrainConfig:
    """Every option of one training run (written to ``OUT/config.json``)."""

    pairs: str
    out: str
    blocks: int = 8
    coupling_growth: int = 32
    cgm_growth: int = 64
    steps: int = 500_000
    batch_size: int = 16
    crop: int = 128
    lr: float = 1e-4
    lr_step: int = 100_000  # lr halves every lr_step steps
    clip: float = 10.0  # max gradient norm; 0 disables clipping
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    loss: LossConfig = field(default_factory=LossConfig)
    perceptual: str = "auto"  # one of gsp.training.options.PERCEPTUAL_BACKENDS
    per_block: int = 5  # VGG block of the perceptual layer (5: conv5_x, the code; 4: conv4_x, the paper)
    transpose: bool = True  # augmentation: random transpose besides the h/v flips
    seed: int = 0
    checkpoint_every: int = 1000
    threads: int | None = None
    device: str = "cpu"
    preset: str = "reference-code"
    init: str = "reference"  # reference: the authors' values; identity: INNRSIC.init_identity; or a .pt to fine-tune
    latent_gain: float = 40.0  # identity start only: Phi_2 = latent_gain * I

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = LossConfig(**self.loss)
        self.betas = tuple(self.betas)
        self.arch()  # validates
        for name in ("steps", "batch_size", "crop", "lr_step", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.crop % 2:
            raise ConfigError(f"--crop {self.crop} must be even (INN-RSIC's Haar transform works on 2x2 blocks)")
        if self.perceptual != "none" and self.loss.w_per > 0 and self.crop < 32:
            raise ConfigError(f"--crop {self.crop} is too small for the perceptual loss (VGG block "
                              f"{self.per_block} sees 1/16 of it): use --crop >= 32 or --perceptual none")
        if self.init not in INITS and not self.init.endswith(".pt"):
            raise ConfigError(f"--init {self.init!r}: choose one of {', '.join(INITS)} or an enhancer "
                              "checkpoint file (.pt) to fine-tune from")
        if self.latent_gain <= 0:
            raise ConfigError(f"--latent-gain must be > 0, got {self.latent_gain}")
        if self.lr <= 0 or self.clip < 0 or self.weight_decay < 0:
            raise ConfigError(f"--lr must be > 0 and --clip, weight decay >= 0 (got lr={self.lr}, "
                              f"clip={self.clip}, weight_decay={self.weight_decay})")

    def arch(self) -> EnhancerConfig:
        try:
            return EnhancerConfig(self.blocks, self.coupling_growth, self.cgm_growth)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def as_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    #: Options that may change when a run is resumed; any other difference is refused.
    RESUMABLE = ("pairs", "out", "steps", "checkpoint_every", "threads", "device")


def config_from_options(options, pairs: str, out: str, n_pairs: int) -> "EnhancerTrainConfig":
    """The run's full configuration from :class:`gsp.training.options.EnhancerTrainOptions`: the preset,
    overridden by every option given."""
    opts = options.model_dump(exclude={"preset", "arch"})
    return training_config(pairs, out, preset=options.preset, n_pairs=n_pairs, arch=options.arch, **opts)


def training_config(pairs: str, out: str, *, preset: str = "reference-code", n_pairs: int | None = None,
                    **options) -> EnhancerTrainConfig:
    """A config from a preset, overridden by every option that is not None.

    ``arch`` may be given as an :class:`EnhancerConfig` or a string for :func:`parse_arch`. The paper preset's
    epochs become steps: ``epochs * ceil(n_pairs / batch_size)`` (``n_pairs`` needed then).
    """
    shipped = presets()
    if preset not in shipped:
        raise ConfigError(f"--preset {preset!r}: choose one of {', '.join(shipped)}")
    values = dict(shipped[preset])
    given = {k: v for k, v in options.items() if v is not None}
    values.update(given)
    arch = values.pop("arch", EnhancerConfig.reference())
    if isinstance(arch, str):
        arch = parse_arch(arch)
    epochs, lr_step_epochs = values.pop("epochs", None), values.pop("lr_step_epochs", None)
    if epochs is not None or lr_step_epochs is not None:
        if "steps" not in given or "lr_step" not in given:
            if not n_pairs:
                raise ConfigError(f"preset {preset!r} counts epochs: the number of pairs is needed")
            per_epoch = math.ceil(n_pairs / values["batch_size"])
            values.setdefault("steps", epochs * per_epoch)
            values.setdefault("lr_step", lr_step_epochs * per_epoch)
    loss_names = {f.name for f in fields(LossConfig)}
    loss = LossConfig(**{k: values.pop(k) for k in list(values) if k in loss_names})
    return EnhancerTrainConfig(pairs=str(pairs), out=str(out), blocks=arch.blocks,
                               coupling_growth=arch.coupling_growth, cgm_growth=arch.cgm_growth, loss=loss,
                               preset=preset, **values)


# ---------------------------------------------------------------------------------------------- training

@dataclass
class TrainResult:
    checkpoint: str
    step: int
    last: dict[str, float]
    perceptual: dict[str, str] | None
    seconds: float


def lr_at(cfg: EnhancerTrainConfig, step: int) -> float:
    """Step schedule: ``lr * 0.5 ** (step // lr_step)`` (the reference's MultiStepLR, gamma 0.5)."""
    return cfg.lr * 0.5 ** (step // cfg.lr_step)


def _check_backbone(state: dict, run: RunDir, backbone: dict | None) -> None:
    ran = json.loads(state.get("perceptual") or "null")
    if (ran or {}).get("backbone") != (backbone or {}).get("backbone"):
        raise ConfigError(f"{run.out} was trained with perceptual backbone "
                          f"{(ran or {}).get('backbone')}, now {(backbone or {}).get('backbone')} would run; "
                          "provision the same weights or train into a new -o")


def _psnr(x_hat: Tensor, x: Tensor) -> float:
    mse = torch.mean((x_hat.detach().clamp(0, 1) - x) ** 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


#: ``on_step(step, total_steps, row)``: called after every step (``row``: that step's ``loss.csv`` values by
#: column) and once before the first new step with ``row`` None (``step`` is where the run starts or resumes).
StepCallback = Callable[[int, int, "dict | None"], None]


def train_enhancer(cfg: EnhancerTrainConfig, *, progress: bool = False, pairs: PairSet | None = None,
                   perceptual: PerceptualBackbone | LpipsLoss | None | Literal["build"] = "build",
                   on_step: StepCallback | None = None) -> TrainResult:
    """Train (or resume from ``OUT/last.pt``) up to ``cfg.steps``; returns where it stopped.

    Writes ``OUT/config.json`` (options, the perceptual backbone that ran, the pairs' codec), ``OUT/loss.csv``
    (one row per step), ``OUT/loss.png`` and ``OUT/last.pt`` every ``checkpoint_every`` steps and at the end.
    ``pairs`` / ``perceptual`` may be passed in already built (tests; a backbone reused across runs); by default
    they are built from ``cfg`` (no backbone when ``w_per`` is 0). ``on_step`` (:data:`StepCallback`) follows
    the run (e.g. a Prefect progress artifact).
    """
    from tqdm import tqdm

    from groundstation.codec import torch_threads

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {cfg.device}: CUDA is not available on this machine")
    data = pairs if pairs is not None else PairSet(cfg.pairs)
    if cfg.loss.w_per == 0:
        perceptual = None
    elif perceptual == "build":
        perceptual = build_perceptual(cfg.perceptual, block=cfg.per_block)
    if perceptual is not None:
        perceptual = perceptual.to(device)
    backbone = perceptual.describe() if perceptual is not None else None
    log.info("perceptual loss: %s", backbone or "disabled")
    if backbone is not None and backbone["backbone"] in ("lpips-vgg", "lpips-alex"):
        log.info("L_per is the %s distance, 0.1-0.6 per image: weight it against l_en with --w-per "
                 "(benchmarks/loss_balance.py --backbone %s measures both gradients)", backbone["backbone"].upper(),
                 backbone["backbone"])
        if backbone["backbone"] == "lpips-alex":
            log.warning("L_per is LPIPS-Alex, the evaluation's own metric: its LPIPS-Alex gains are not independent "
                        "evidence (check LPIPS-VGG and ST-LPIPS beside it)")
    elif backbone is not None and backbone["backbone"] != "vgg19":
        log.warning("L_per runs on %s %s, not VGG19: its feature scale differs from the reference's (see "
                    "gsp/training/perceptual.py); compare l_per with l_en in loss.csv and set --w-per accordingly",
                    backbone["backbone"], backbone["layer"])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = INNRSIC(cfg.arch())
    if cfg.init == "identity":
        model.init_identity(cfg.latent_gain)
    elif cfg.init not in INITS:  # fine-tune: start from an enhancer checkpoint of the same architecture
        from enhancer.checkpoint import load_enhancer

        start, start_cfg, start_sha = load_enhancer(cfg.init)
        if start_cfg != cfg.arch():
            raise ConfigError(f"--init {cfg.init}: its architecture {start_cfg} differs from --config {cfg.arch()}")
        model.load_state_dict(start.state_dict(), strict=True)
        log.info("fine-tuning from %s (sha256 %s)", cfg.init, start_sha)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]  # the Haar kernels are frozen
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    run = RunDir(out, CHECKPOINT_FORMAT, cfg.as_dict(), resumable=EnhancerTrainConfig.RESUMABLE)
    ckpt_path = run.checkpoint
    step, elapsed0 = 0, 0.0
    state = run.load(defaults={"init": "reference", "latent_gain": 40.0})  # options older runs did not record
    if state is not None:
        _check_backbone(state, run, backbone)
        model.load_state_dict(state["state_dict"], strict=True)
        opt.load_state_dict(state["optimizer"])
        step, elapsed0 = int(state["step"]), float(state["elapsed_s"])
        log.info("resumed enhancer training from %s at step %d", ckpt_path, step)
    meta = {"options": cfg.as_dict(), "perceptual": backbone,
            "init_sha256": None if cfg.init in INITS else sha256_file(cfg.init),
            "pairs": {"count": len(data), "codec": data.manifest.get("codec")},
            "losses": "defined in enhancer/train.py; loss.csv holds the unweighted terms and the weighted total"}
    run.write_config(meta)

    losses = LossLog(out / "loss.csv", CSV_COLUMNS, step)
    title = (f"INN-RSIC {cfg.blocks}/{cfg.coupling_growth}/{cfg.cgm_growth}, {cfg.preset}, "
             f"L_per {backbone['backbone'] + ' ' + backbone['layer'].split()[0] if backbone else 'off'}")
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=not progress, desc="train-enhancer",
               unit="step")
    if on_step is not None:
        on_step(step, cfg.steps, None)
    try:
        with torch_threads(cfg.threads):
            while step < cfg.steps:
                lr = lr_at(cfg, step)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, x_elic = data.batch(step, cfg.batch_size, cfg.crop, seed=cfg.seed, transpose=cfg.transpose)
                z_prime, noise = step_noise(cfg.seed, step, tuple(x.shape), cfg.loss)
                x, x_elic, z_prime = x.to(device), x_elic.to(device), z_prime.to(device)
                noise = noise.to(device) if noise is not None else None
                opt.zero_grad(set_to_none=True)
                res = enhancer_losses(model, x, x_elic, z_prime, noise, cfg.loss, perceptual)
                if not torch.isfinite(res["total"]):
                    raise TrainingError(f"loss is {res['total'].item()} at step {step + 1}; the last good "
                                        f"checkpoint is {ckpt_path} (step <= {step}): lower --lr or --clip and "
                                        "resume from it")
                res["total"].backward()
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                step += 1
                elapsed = elapsed0 + time.perf_counter() - t0
                last = {k: float(res[k].item()) for k in ("total", "l_dec", "l_case", "l_en", "l_per")}
                last["psnr_en_db"] = _psnr(res["x_hat"], x)
                row = [step] + [f"{last[k]:.6g}" for k in CSV_COLUMNS[1:7]] + [f"{lr:.3g}", f"{elapsed:.2f}"]
                losses.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{last['total']:.4g}", psnr_en=f"{last['psnr_en_db']:.2f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    run.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                              "seed": cfg.seed, "elapsed_s": elapsed, "perceptual": json.dumps(backbone)})
                    losses.plot(out / "loss.png", title=title)
                if on_step is not None:  # after the checkpoint: a callback that stops the run loses nothing
                    on_step(step, cfg.steps, dict(zip(CSV_COLUMNS, row)))
    finally:
        bar.close()
        losses.close()
    return TrainResult(checkpoint=str(ckpt_path), step=step, last=last, perceptual=backbone,
                       seconds=time.perf_counter() - t0)


def export_enhancer(train_checkpoint: str | Path, out_path: str | Path) -> tuple[str, EnhancerConfig, int]:
    """Write the plain state_dict (the authors' format) of a training checkpoint; ``(sha256, config, step)``.

    The written file loads with :func:`enhancer.checkpoint.load_enhancer` (strict, architecture from shapes).
    """
    from enhancer.checkpoint import config_from_state_dict, normalize_state_dict

    path = Path(train_checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint to export; train first (gsp train-enhancer)")
    state, _ = read_checkpoint(path)
    sd = normalize_state_dict(state, str(path))
    config = config_from_state_dict(sd, str(path))
    model = INNRSIC(config)
    model.load_state_dict(sd, strict=True)
    digest = save_enhancer(model, out_path)
    return digest, config, int(state.get("step", -1)) if isinstance(state, dict) else -1
