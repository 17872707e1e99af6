"""Rate-distortion training of a (reduced) Chandelier ELIC, with resume, logs and a loss curve.

Loss: ``lambda * 255^2 * MSE + bpp`` (CompressAI's RateDistortionLoss, the paper's convention), Adam for the
network and a separate Adam for the entropy bottleneck's quantiles (the auxiliary loss). A training checkpoint is
a plain dict of tensors and numbers (readable with ``weights_only=True``); ``export_codec`` fills the entropy tables
once and writes the inference file that the registry points to.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from groundstation.fileio import save_torch_atomic, write_json_atomic
from groundstation.errors import ConfigError
from groundstation.checkpoints import read_checkpoint
from groundstation.codec import CodecArch, LoadedCodec, TileCodec, build_codec, infer_codec_arch
from groundstation.fileio import sha256_file
from groundstation.images import RandomCrops, list_images, load_rgb
from groundstation.plots import plot_loss_curve

log = logging.getLogger(__name__)


@dataclass
class CodecTrainConfig:
    data: list[str]
    out: str
    N: int = 96
    M: int = 192
    lmbda: float = 0.0032
    steps: int = 4000
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-4
    lr_drop_at: int = 3200  # lr /= 10 from this step on
    aux_lr: float = 1e-3
    clip: float = 1.0
    checkpoint_every: int = 250
    seed: int = 0
    threads: int | None = None
    groups: list[int] = field(default_factory=list)
    init_from: str | None = None  # a training checkpoint (last.pt) whose weights start a new run (not resumed)

    def arch(self) -> CodecArch:
        return CodecArch(self.N, self.M, tuple(self.groups)) if self.groups else CodecArch.default_groups(self.N, self.M)


def _rd_loss(out: dict, x: torch.Tensor, lmbda: float) -> dict[str, torch.Tensor]:
    n, _, h, w = x.shape
    num_pixels = n * h * w
    bpp = sum(torch.log(lk).sum() for lk in out["likelihoods"].values()) / (-math.log(2) * num_pixels)
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return {"loss": lmbda * 255**2 * mse + bpp, "bpp": bpp, "mse": mse}


def _split_params(model: torch.nn.Module) -> tuple[list, list]:
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux


def train_codec(cfg: CodecTrainConfig, progress: bool = True) -> Path:
    """Train (or resume) into ``cfg.out``; returns the path of the last training checkpoint."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_codec(cfg.arch())
    model.train()
    main_p, aux_p = _split_params(model)
    opt = torch.optim.Adam(main_p, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_p, lr=cfg.aux_lr)
    ckpt_path = out / "last.pt"
    step = 0
    if ckpt_path.exists():
        state, _ = read_checkpoint(ckpt_path)
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        aux_opt.load_state_dict(state["aux_optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed codec training from %s at step %d", ckpt_path, step)
    elif cfg.init_from:
        init, _ = read_checkpoint(cfg.init_from)
        if not isinstance(init, dict) or "state_dict" not in init:
            raise ConfigError(f"--init-from {cfg.init_from}: not a gsp codec training checkpoint (no 'state_dict'); "
                              "give the last.pt of an earlier `gsp train-codec` run")
        try:
            model.load_state_dict(init["state_dict"])
        except RuntimeError as exc:
            raise ConfigError(f"--init-from {cfg.init_from}: its weights do not fit N={cfg.N} M={cfg.M}: "
                              f"{str(exc).splitlines()[0]}") from exc
        log.info("starting from the weights of %s (step %s); optimiser state fresh", cfg.init_from,
                 init.get("step"))
    write_json_atomic(out / "config.json", asdict(cfg))

    data = RandomCrops(list_images(*cfg.data), cfg.crop, seed=cfg.seed + step)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    log_path = out / "loss.csv"
    new_log = not log_path.exists() or step == 0
    log_file = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log_file)
    if new_log:
        writer.writerow(["step", "loss", "bpp", "mse", "psnr_db", "aux_loss", "lr", "elapsed_s"])
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train-codec", unit="step")
    try:
        while step < cfg.steps:
            for x in loader:
                if step >= cfg.steps:
                    break
                lr = cfg.lr if step < cfg.lr_drop_at else cfg.lr / 10
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad()
                aux_opt.zero_grad()
                res = _rd_loss(model(x), x, cfg.lmbda)
                res["loss"].backward()
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(main_p, cfg.clip)
                opt.step()
                aux = model.aux_loss()
                aux.backward()
                aux_opt.step()
                step += 1
                psnr = -10 * math.log10(max(res["mse"].item(), 1e-10))
                writer.writerow([step, f"{res['loss'].item():.5f}", f"{res['bpp'].item():.5f}",
                                 f"{res['mse'].item():.7f}", f"{psnr:.3f}", f"{aux.item():.3f}", lr,
                                 f"{time.time() - t0:.1f}"])
                bar.update(1)
                bar.set_postfix(loss=f"{res['loss'].item():.3f}", bpp=f"{res['bpp'].item():.3f}", psnr=f"{psnr:.2f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    log_file.flush()
                    _save_training_checkpoint(ckpt_path, model, opt, aux_opt, step)
                    plot_loss_curve(log_path, out / "loss.png", title=f"ELIC N={cfg.N} M={cfg.M} lambda={cfg.lmbda}")
    finally:
        bar.close()
        log_file.close()
    return ckpt_path


def _save_training_checkpoint(path: Path, model, opt, aux_opt, step: int) -> None:
    save_torch_atomic({"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                       "aux_optimizer": aux_opt.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}, path)


def export_codec(train_checkpoint: str | Path, out_path: str | Path, half: bool = True) -> str:
    """Write the inference checkpoint: weights, then entropy tables computed once from exactly those weights.

    With ``half`` the parameters are rounded to float16 first and stored as float16 (half the size; the
    loader copies them into float32 exactly), and the tables are computed from the rounded model, so encoder
    and decoder agree bit for bit. Buffers (tables, scale table, masks) keep their own types.
    """
    state, _ = read_checkpoint(train_checkpoint)
    sd = state["state_dict"]
    model = build_codec(infer_codec_arch(sd))
    model.load_state_dict(sd, strict=True)
    param_names = {n for n, _ in model.named_parameters()}
    if half:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    model.update(force=True)  # our own training checkpoint: tables are computed here, once
    out = {k: (v.half() if half and k in param_names and v.is_floating_point() else v)
           for k, v in model.state_dict().items()}
    return sha256_file(save_torch_atomic(out, out_path))


def evaluate_codec(loaded: LoadedCodec, files: list[Path], threads: int = 1) -> dict:
    """Real compress/decompress of every image (whole image, padded to 64): mean bpp and PSNR."""
    tc = TileCodec(loaded, threads=threads)
    bpps, psnrs = [], []
    for path in tqdm(files, desc="evaluate", unit="img"):
        img = load_rgb(path)
        dec, enc, _ = tc.roundtrip(img, what=str(path))
        bpps.append(enc.nbytes * 8 / (img.shape[0] * img.shape[1]))
        mse = np.mean((dec.astype(np.float64) - img.astype(np.float64)) ** 2)
        psnrs.append(10 * np.log10(255**2 / max(mse, 1e-10)))
    return {"images": len(files), "bpp": float(np.mean(bpps)), "psnr_db": float(np.mean(psnrs))}
