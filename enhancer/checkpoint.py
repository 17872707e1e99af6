"""Loading and saving enhancer checkpoints; random state dicts for tests.

The authors' enhancer checkpoints are a plain ``state_dict`` (264 entries for the reference configuration,
listed in ``shared/reference/enhancer_state_dict.json``), sometimes with a ``module.`` prefix (DataParallel);
training checkpoints may wrap it under ``state_dict`` or ``network``. :func:`load_enhancer` accepts all of
these, reads the architecture back from the tensor shapes and loads strictly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from enhancer.model import INNRSIC, EnhancerConfig
from enhancer.modules import YUV_MATRIX, haar_kernels
from groundstation.checkpoints import read_state_dict, unwrap_state_dict
from groundstation.fileio import save_torch_atomic, sha256_file
from groundstation.errors import CheckpointError

__all__ = [
    "config_from_state_dict",
    "load_enhancer",
    "load_manifest",
    "normalize_state_dict",
    "random_state_dict",
    "save_enhancer",
]

_COUPLING_KEY = re.compile(r"^operations_gaussian\.(\d+)\.F\.conv1\.weight$")
_MAX_NAMED = 5  # keys quoted per category in a mismatch message


def normalize_state_dict(obj: object, source: str = "checkpoint") -> dict[str, Tensor]:
    """Unwrap a training container and strip a ``module.`` prefix (:func:`groundstation.checkpoints.unwrap_state_dict`)."""
    return unwrap_state_dict(obj, source).tensors


def config_from_state_dict(state: Mapping[str, Tensor], source: str = "checkpoint") -> EnhancerConfig:
    """Read the architecture back from tensor shapes.

    blocks: the number of couplings (``operations_gaussian.<i>.F.conv1.weight``); coupling growth: conv1's
    output channels in the first coupling; CGM growth: ``guassianize.h_mean_s.conv1.weight``'s output channels.
    """
    indices = sorted(int(m.group(1)) for k in state if (m := _COUPLING_KEY.match(k)))
    if not indices:
        raise CheckpointError(f"{source}: no coupling blocks found (no key like "
                              "'operations_gaussian.2.F.conv1.weight'); not an INN-RSIC enhancer checkpoint")
    cgm_key = "guassianize.h_mean_s.conv1.weight"
    if cgm_key not in state:
        raise CheckpointError(f"{source}: missing key {cgm_key!r} (the CGM mean network); "
                              "not an INN-RSIC enhancer checkpoint, or one from another version")
    coupling_key = f"operations_gaussian.{indices[0]}.F.conv1.weight"
    try:
        return EnhancerConfig(blocks=len(indices),
                              coupling_growth=int(state[coupling_key].shape[0]),
                              cgm_growth=int(state[cgm_key].shape[0]))
    except (ValueError, IndexError) as exc:
        raise CheckpointError(f"{source}: cannot infer the architecture from tensor shapes: {exc}") from exc


def _mismatch_message(source: str, config: EnhancerConfig, expected: Mapping[str, Tensor],
                      got: Mapping[str, Tensor]) -> str | None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k}: checkpoint {list(got[k].shape)} vs model {list(expected[k].shape)}"
             for k in expected if k in got and got[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return None

    def part(label: str, items: list[str]) -> str:
        more = f" (+{len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else ""
        return f"{len(items)} {label}: " + ", ".join(items[:_MAX_NAMED]) + more

    parts = [part(label, items) for label, items in
             (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong)) if items]
    return (f"{source}: state_dict does not match INN-RSIC {config} "
            f"(inferred from its shapes): " + "; ".join(parts))


def _check_values(source: str, state: Mapping[str, Tensor]) -> None:
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: {name} contains NaN or Inf; the checkpoint is corrupt")
    for name, value in state.items():
        if name.endswith("haar_weights"):
            expected = haar_kernels(value.shape[0] // 4).to(value.dtype)
            if value.shape != expected.shape or not torch.equal(value.cpu(), expected):
                raise CheckpointError(f"{source}: {name} is not the fixed Haar kernel set (+-1 values); "
                                      "the checkpoint is corrupt or not an INN-RSIC enhancer")


def load_enhancer(path: str | Path, expected_sha256: str | None = None, *,
                  device: str | torch.device = "cpu") -> tuple[INNRSIC, EnhancerConfig, str]:
    """Load an enhancer checkpoint: returns ``(model in eval mode, its config, the file's sha256)``.

    Accepts a plain state_dict, one wrapped under ``state_dict``/``network``, and a ``module.`` prefix.
    The architecture is inferred from the tensor shapes, then the weights are loaded strictly. Raises
    CheckpointError for an unreadable file, a sha256 other than ``expected_sha256``, or any missing,
    unexpected or wrong-shape key (the message names the first few).
    """
    path = Path(path)
    read = read_state_dict(path, expected_sha256=expected_sha256)
    digest, state = read.sha256, read.tensors
    config = config_from_state_dict(state, str(path))
    model = INNRSIC(config)
    message = _mismatch_message(str(path), config, model.state_dict(), state)
    if message is not None:
        raise CheckpointError(message)
    _check_values(str(path), state)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), config, digest


def save_enhancer(model: INNRSIC, path: str | Path) -> str:
    """Save ``model``'s plain state_dict (the authors' format, no wrapper); returns the file's sha256."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return sha256_file(save_torch_atomic(state, path))


def load_manifest(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from a parameter manifest (``shared/reference/enhancer_state_dict.json``)."""
    try:
        data = json.loads(Path(path).read_text())
        return {name: tuple(entry["shape"]) for name, entry in data["entries"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a readable parameter manifest ({exc})") from exc


def random_state_dict(shapes: Mapping[str, Sequence[int]] | str | Path, *, seed: int = 0,
                      scale: float = 0.2, last_scale: float | None = None) -> dict[str, Tensor]:
    """A random, *invertible* enhancer state dict with the given names and shapes, for tests.

    ``shapes`` is a mapping name -> shape or the path of a manifest JSON. Conv weights are normal with
    std ``scale * sqrt(2 / (fan_in + fan_out))`` (xavier-normal times ``scale``; ``last_scale``, default
    ``scale``, for each dense block's conv5, which is not zero here, so no block is the identity), biases
    N(0, 0.01^2), the colour matrices the YUV matrix plus N(0, 0.05^2) noise, and Haar kernels their fixed
    values. The same seed gives the same tensors.
    """
    last_scale = scale if last_scale is None else last_scale
    if isinstance(shapes, (str, Path)):
        shapes = load_manifest(shapes)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        if name.endswith("haar_weights"):
            out[name] = haar_kernels(shape[0] // 4)
        elif name.endswith("conv_weights"):
            out[name] = torch.tensor(YUV_MATRIX) + 0.05 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            out[name] = 0.01 * torch.randn(shape, generator=gen)
        elif len(shape) == 4:
            fan_in, fan_out = shape[1] * shape[2] * shape[3], shape[0] * shape[2] * shape[3]
            gain = last_scale if name.endswith("conv5.weight") else scale
            out[name] = gain * (2.0 / (fan_in + fan_out)) ** 0.5 * torch.randn(shape, generator=gen)
        else:
            out[name] = torch.randn(shape, generator=gen)
    return out

