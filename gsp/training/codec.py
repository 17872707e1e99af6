"""Rate-distortion training of a (reduced) Chandelier ELIC, with resume, logs and a loss curve.

Loss: ``lambda * 255^2 * MSE + bpp`` (CompressAI's RateDistortionLoss, the paper's convention), Adam for the
network and a separate Adam for the entropy bottleneck's quantiles (the auxiliary loss). A training checkpoint is
a plain dict of tensors and numbers (readable with ``weights_only=True``); ``export_codec`` fills the entropy tables
once and writes the inference file that the registry points to.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from groundstation.checkpoints import read_checkpoint
from groundstation.codec import LoadedCodec, TileCodec, build_codec, infer_codec_arch, torch_threads
from groundstation.errors import ConfigError
from groundstation.fileio import save_torch_atomic, sha256_file
from groundstation.images import RandomCrops, list_images, load_rgb

from .options import CodecTrainConfig
from .loop import RESUMABLE, LossLog, RunDir

log = logging.getLogger(__name__)


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


#: Format tag of a codec training checkpoint (``last.pt``).
CHECKPOINT_FORMAT = "gsp-codec-train/1"
CSV_COLUMNS = ["step", "loss", "bpp", "mse", "psnr_db", "aux_loss", "lr", "elapsed_s"]

#: ``on_step(step, total_steps, row)``: called after every step (``row``: that step's ``loss.csv`` values by
#: column) and once before the first new step with ``row`` None (``step`` is where the run starts or resumes).
StepCallback = Callable[[int, int, "dict | None"], None]


def train_codec(cfg: CodecTrainConfig, progress: bool = True, on_step: StepCallback | None = None) -> Path:
    """Train (or resume) into ``cfg.out``; returns the path of the last training checkpoint.

    ``on_step`` (:data:`StepCallback`) follows the run (e.g. a Prefect progress artifact)."""
    with torch_threads(cfg.threads):
        return _train(cfg, progress, on_step)


def _train(cfg: CodecTrainConfig, progress: bool, on_step: StepCallback | None = None) -> Path:
    run = RunDir(cfg.out, CHECKPOINT_FORMAT, cfg.model_dump(), resumable=RESUMABLE | {"lr_drop_at", "init_from"})
    out = run.out
    torch.manual_seed(cfg.seed)
    model = build_codec(cfg.arch())
    model.train()
    main_p, aux_p = _split_params(model)
    opt = torch.optim.Adam(main_p, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_p, lr=cfg.aux_lr)
    ckpt_path = run.checkpoint
    step = 0
    state = run.load(legacy_ok=True)
    if state is not None:
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
    run.write_config(cfg.model_dump())

    data = RandomCrops(list_images(*cfg.data), cfg.crop, seed=cfg.seed + step)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    losses = LossLog(out / "loss.csv", CSV_COLUMNS, step)
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train-codec", unit="step")
    if on_step is not None:
        on_step(step, cfg.steps, None)
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
                row = [step, f"{res['loss'].item():.5f}", f"{res['bpp'].item():.5f}", f"{res['mse'].item():.7f}",
                       f"{psnr:.3f}", f"{aux.item():.3f}", lr, f"{time.time() - t0:.1f}"]
                losses.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{res['loss'].item():.3f}", bpp=f"{res['bpp'].item():.3f}", psnr=f"{psnr:.2f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    losses.flush()
                    run.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                              "aux_optimizer": aux_opt.state_dict(), "step": step,
                              "torch_rng": torch.get_rng_state()})
                    losses.plot(out / "loss.png", title=f"ELIC N={cfg.N} M={cfg.M} lambda={cfg.lmbda}")
                if on_step is not None:  # after the checkpoint: a callback that stops the run loses nothing
                    on_step(step, cfg.steps, dict(zip(CSV_COLUMNS, row)))
    finally:
        bar.close()
        losses.close()
    return ckpt_path


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
