"""The ``int`` entropy mode: ELIC's prior networks in exact integer arithmetic.

Every number that chooses a symbol's distribution (the Gaussian's mean on a fixed grid and its scale-table
index) comes out of integer arithmetic, so encoder and decoder agree on every CPU, thread count and GPU (Balle
et al. 2019, "Integer networks for data compression with latent-variable models"):

* the hyper-synthesis ``h_s``, the channel context ``cc_transforms`` (g_ch), the checkerboard context
  ``context_prediction`` (g_sp) and the parameter aggregation ``ParamAggregation`` hold integer weights (one
  scale per output channel, folded into the integer requantisation), integer biases and integer activations
  (ReLU clipped to ``[0, 2^b - 1]``; ELIC's prior networks use plain ReLU, no GELU);
* activations are requantised with a per-channel multiply, a rounding right shift and a clip (int64);
* every convolution is an ``unfold`` and one matrix product in float32 where every partial sum is provably
  below 2^24 in magnitude, in float64 where it is below 2^53: a sum of integer products whose partial sums are
  exactly representable is exact in any order, with or without fused multiply-add (the proof is
  :func:`IntPrior.check_bounds`, run on every load, and docs/determinism.md);
* the prior's inputs are integers already: the hyperprior symbols plus the bottleneck medians on the grid
  ``2^-Z_BITS``, and the decoded latents ``symbol * 2^MEAN_BITS + mean`` (means live on that grid), both clipped
  to the range the bound assumes (a hostile stream's huge symbols cannot break it);
* a mean is the accumulator times an integer multiplier, shifted; a scale index is the number of integer
  thresholds (one per table boundary and channel, computed once when quantising) below the accumulator: no
  floating-point comparison against a scale boundary anywhere.

CompressAI's rANS coder and the checkpoint's CDF tables code the symbols as in the float modes.

The integer prior of a codec is a small sidecar file (int8 weights) read through the one checkpoint reader;
:func:`quantise` makes it from a loaded codec and calibration latents (``benchmarks/int_prior_quantise.py``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from .checkpoints import read_state_dict
from .errors import CheckpointError

#: Grid of the means and of the decoded latents the context networks see: multiples of 2^-MEAN_BITS.
MEAN_BITS = 4
#: Grid of the hyperprior input (symbols + bottleneck medians): multiples of 2^-Z_BITS.
Z_BITS = 4
#: Largest clip of the integer latent / hyperprior inputs (in grid units): |value| <= INPUT_MAX. Each channel
#: has its own clip (``y_clip``, ``z_clip``: twice the largest value seen in calibration, as 2^k - 1, at most
#: this), so the bounds, and the number of chunks a sum needs, follow the data.
INPUT_MAX = (1 << 12) - 1
#: Clip of a mean, in grid units (|mean| <= 2^15 / 2^MEAN_BITS = 2048).
MEAN_MAX = 1 << 15
#: A float32 sum of integers is exact while every partial sum stays below this; float64 likewise.
EXACT = {torch.float32: 1 << 24, torch.float64: 1 << 53}
#: int64 requantisation: accumulator x multiplier must stay below this.
INT64_SAFE = 1 << 62
FORMAT = 1
#: The networks, in the order of the sidecar's layer names.
HIDDEN_BITS = 8  # ReLU activations in [0, 255]
LINEAR_BITS = 12  # signed network outputs (h_s, g_ch, g_sp) in [-2047, 2047]
WEIGHT_BITS = 8  # weights in [-127, 127]


@dataclass
class IntLayer:
    """One convolution of an integer network, in stride-1 convolution form.

    A transposed convolution is stored as the equivalent convolution over its input with ``up - 1`` zeros
    inserted between samples. ``out``: ``relu`` or ``linear`` (requantised and clipped to ``[lo, hi]``) or
    ``params`` (means and scale indexes; the last layer of a parameter aggregation).
    """

    weight: torch.Tensor  # (O, I, kh, kw) integer
    bias: torch.Tensor  # (O,) int64, in accumulator units
    mult: torch.Tensor  # (O,) int64 requantisation multiplier
    shift: torch.Tensor  # (O,) int64 rounding right shift
    lo: int
    hi: int
    out: str = "relu"
    up: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom
    in_max: torch.Tensor | None = None  # (I,) int64: |input| bound per input channel (set by the network)
    thresholds: torch.Tensor | None = None  # (O/2, 63) int64, ``params`` only
    kernel: torch.dtype = torch.float32  # chosen by the bound check
    bound: int = 0  # max over outputs of sum |w| * |x|: every partial sum is at most this
    chunks: list = field(default_factory=list)  # unfold-row ranges, each of whose sums is exact in the kernel
    _dev: dict = field(default_factory=dict, repr=False)

    def _weights(self, device: torch.device) -> torch.Tensor:
        key = (str(device), self.kernel)
        if key not in self._dev:
            self._dev[key] = self.weight.to(torch.int64).to(device=device, dtype=self.kernel)
            self._dev[key, "b"] = self.bias.to(device)[:, None, None]
            self._dev[key, "m"] = self.mult.to(device)[:, None, None]
            self._dev[key, "s"] = self.shift.to(device)[:, None, None]
            self._dev[key, "h"] = (torch.ones_like(self.shift) << (self.shift - 1)).to(device)[:, None, None]
            if self.thresholds is not None:
                self._dev[key, "t"] = self.thresholds.to(device).contiguous()
        return self._dev[key]

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """(n, I, H, W) integer-valued floats -> (n, O, H', W') int64 accumulator (bias included), exact.

        The sum over the input channels runs in :attr:`chunks` (channel ranges), each in :attr:`kernel`
        precision where :meth:`IntPrior.check_bounds` proved every partial sum exact, the chunks' totals in
        int64. On the CPU a direct convolution; on CUDA an explicit unfold and matrix product (cuDNN could pick
        a Winograd or FFT algorithm, which is not a sum of the integer products)."""
        w = self._weights(x.device)
        n, c, h, wd = x.shape
        x = x.to(self.kernel)
        if self.up > 1:
            xs = x.new_zeros((n, c, (h - 1) * self.up + 1, (wd - 1) * self.up + 1))
            xs[..., :: self.up, :: self.up] = x
            x = xs
        if any(self.pad):
            x = F.pad(x, self.pad)
        o, _, kh, kw = w.shape
        oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
        acc = None
        for a, b in self.chunks:
            if x.is_cuda:
                cols = F.unfold(x[:, a:b], (kh, kw))
                part = torch.matmul(w[:, a:b].reshape(o, -1), cols).reshape(n, o, oh, ow)
            else:
                part = F.conv2d(x[:, a:b], w[:, a:b])
            part = part.to(torch.int64)
            acc = part if acc is None else acc.add_(part)
        return acc.add_(self._dev[(str(x.device), self.kernel), "b"])

    def requantise(self, acc: torch.Tensor) -> torch.Tensor:
        """round(acc * mult / 2^shift), half up, clipped to [lo, hi] (after ReLU for ``relu``): exact int64,
        returned as float32 (|values| < 2^24: exact) for the next layer."""
        key = (str(acc.device), self.kernel)
        m, s, h = self._dev[key, "m"], self._dev[key, "s"], self._dev[key, "h"]
        if self.out == "relu":
            acc = acc.clamp_(min=0)
        v = acc.mul_(m).add_(h).bitwise_right_shift_(s)
        return v.clamp_(self.lo, self.hi)

    def params(self, acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(means in grid units int64, scale-table indexes int32) from the last aggregation layer."""
        key = (str(acc.device), self.kernel)
        n, o, h, w = acc.shape
        half = o // 2
        a = acc[:, half:].permute(1, 0, 2, 3).reshape(half, -1).contiguous()
        means = self.requantise(acc[:, :half])
        # index = number of table boundaries strictly below the scale (CompressAI's build_indexes)
        idx = torch.searchsorted(self._dev[key, "t"], a, right=False)
        return means, idx.reshape(half, n, h, w).permute(1, 0, 2, 3).to(torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.requantise(self.accumulate(x)).to(torch.float32)


class IntNet:
    """A chain of :class:`IntLayer` (the last one's output is what the network gives)."""

    def __init__(self, layers: list[IntLayer]) -> None:
        self.layers = layers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers[:-1]:
            x = layer.forward(x)
        return self.layers[-1].params(self.layers[-1].accumulate(x))


def _chunks(terms: torch.Tensor, limit: int) -> list[tuple[int, int]]:
    """Split the input channels 0..K of a convolution into consecutive ranges whose every partial sum stays
    below ``limit`` for every output: ``terms`` (O, K) holds sum over taps of |w| times max|x| (>= 0), so a
    range's largest partial sum is at most its total, and that total only grows with the range."""
    cs = torch.cat([torch.zeros_like(terms[:, :1]), terms.cumsum(dim=1)], dim=1)  # (O, K + 1)
    out, start, k = [], 0, terms.shape[1]
    while start < k:
        grow = (cs[:, start + 1:] - cs[:, start:start + 1]).amax(dim=0)  # total of rows start..j, j >= start
        end = start + int((grow < limit).sum())  # grow is nondecreasing: the ranges below the limit
        if end == start:
            raise CheckpointError(f"one product reaches {int(terms[:, start].max())}, not below {limit}")
        out.append((start, end))
        start = end
    return out


def _in_max(*parts: tuple[int, int]) -> torch.Tensor:
    """Per-input-channel |value| bound of a concatenation of (channels, bound) parts."""
    return torch.cat([torch.full((c,), b, dtype=torch.int64) for c, b in parts])


@dataclass
class IntPrior:
    """The integer prior networks of one codec (groups as the codec's), and the codec they belong to."""

    groups: tuple[int, ...]
    M: int
    codec_sha256: str
    h_s: IntNet
    cc: dict[int, IntNet]  # k = 1..G-1
    cp: dict[int, IntNet]  # k = 0..G-1
    pa: dict[int, IntNet]  # k = 0..G-1
    z_offset: torch.Tensor  # (C_z,) int64: the bottleneck medians on the 2^-Z_BITS grid
    z_clip: torch.Tensor  # (C_z,) int64: |hyperprior input| clip per channel
    y_clip: torch.Tensor  # (M,) int64: |latent input of the context networks| clip per channel
    sha256: str = ""

    def y_clip_of(self, k: int) -> torch.Tensor:
        """The clips of group k's channels."""
        start = sum(self.groups[:k])
        return self.y_clip[start:start + self.groups[k]]

    def nets(self) -> Iterator[tuple[str, IntNet]]:
        yield "h_s", self.h_s
        for k, net in self.cc.items():
            yield f"cc.{k}", net
        for k, net in self.cp.items():
            yield f"cp.{k}", net
        for k, net in self.pa.items():
            yield f"pa.{k}", net

    def set_input_bounds(self) -> None:
        """Each layer's per-input-channel |x| bound, from the clips of what feeds it."""
        g = self.groups
        lin = (1 << (LINEAR_BITS - 1)) - 1
        self.h_s.layers[0].in_max = self.z_clip
        for k, net in self.cc.items():
            net.layers[0].in_max = torch.cat([self.y_clip_of(0), *([self.y_clip_of(k - 1)] if k > 1 else [])])
        for k, net in self.cp.items():
            net.layers[0].in_max = self.y_clip_of(k)
        for k, net in self.pa.items():
            net.layers[0].in_max = _in_max((2 * g[k], lin), *([(2 * g[k], lin)] if k > 0 else []),
                                           (2 * self.M, lin))
        for _, net in self.nets():
            for prev, layer in zip(net.layers, net.layers[1:]):
                layer.in_max = torch.full((layer.weight.shape[1],), max(abs(prev.lo), abs(prev.hi)),
                                          dtype=torch.int64)

    def check_bounds(self) -> list[dict]:
        """Prove every sum exact or refuse (CheckpointError): per layer, the largest partial sum any kernel can
        form is at most max_o sum_i |w_oi| * max|x_i| (a partial sum is a sub-sum of those terms, zeros
        included); float32 is used where that is below 2^24, float64 where it is below 2^53. The bias is added
        in int64, and |accumulator| x multiplier must stay below 2^62. Returns one row per layer."""
        self.set_input_bounds()
        rows = []
        for name, net in self.nets():
            for i, layer in enumerate(net.layers):
                w = layer.weight.to(torch.int64).abs()
                if layer.in_max is None or layer.in_max.numel() != w.shape[1]:
                    raise CheckpointError(f"integer prior {name}.{i}: {w.shape[1]} input channels where "
                                          f"{0 if layer.in_max is None else layer.in_max.numel()} are fed")
                # a float64 estimate first (relative error < 2^-40 here): beyond it the int64 sums could wrap
                estimate = float((w.double().sum(dim=(2, 3)) * layer.in_max.double()[None, :]).sum(dim=1).max())
                bound = int((w.sum(dim=(2, 3)) * layer.in_max[None, :]).sum(dim=1).max()) \
                    if estimate < 2.0 ** 60 else int(estimate)
                if bound >= EXACT[torch.float64] or estimate >= EXACT[torch.float64]:
                    raise CheckpointError(
                        f"integer prior {name}.{i}: a partial sum can reach {bound} (log2 {math.log2(bound):.1f}), "
                        "not below 2^53: no float kernel computes it exactly; quantise with fewer weight or "
                        "activation bits")
                per_channel = (w.sum(dim=(2, 3)) * layer.in_max[None, :])  # (O, I): a channel's whole taps
                if int(per_channel.max()) < EXACT[torch.float32]:
                    layer.kernel, layer.chunks = torch.float32, _chunks(per_channel, EXACT[torch.float32])
                else:
                    layer.kernel, layer.chunks = torch.float64, [(0, per_channel.shape[1])]
                acc_max = bound + int(layer.bias.abs().max())
                if acc_max * int(layer.mult.max()) >= INT64_SAFE or int(layer.shift.min()) < 1 \
                        or int(layer.shift.max()) > 62:
                    raise CheckpointError(f"integer prior {name}.{i}: requantisation could overflow int64 "
                                          f"(|acc| <= {acc_max}, multiplier <= {int(layer.mult.max())}, shifts "
                                          f"{int(layer.shift.min())}..{int(layer.shift.max())})")
                layer.bound = bound
                layer._dev.clear()
                rows.append({"layer": f"{name}.{i}", "bound": bound, "log2_bound": round(math.log2(max(bound, 1)), 2),
                             "kernel": str(layer.kernel).replace("torch.", ""), "chunks": len(layer.chunks)})
        return rows

    # ------------------------------------------------------------------------------------------- storage
    def state_dict(self) -> dict[str, torch.Tensor]:
        sd: dict[str, torch.Tensor] = {
            "format": torch.tensor([FORMAT, MEAN_BITS, Z_BITS, INPUT_MAX, MEAN_MAX, self.M]),
            "groups": torch.tensor(list(self.groups)),
            "codec_sha256": torch.tensor(list(bytes.fromhex(self.codec_sha256)), dtype=torch.uint8),
            "z_offset": self.z_offset,
            "z_clip": self.z_clip,
            "y_clip": self.y_clip,
        }
        kinds = {"relu": 0, "linear": 1, "params": 2}
        for name, net in self.nets():
            for i, layer in enumerate(net.layers):
                p = f"{name}.{i}."
                wmax = int(layer.weight.abs().max())
                sd[p + "weight"] = layer.weight.to(torch.int8 if wmax < 128 else torch.int16 if wmax < 32768
                                                   else torch.int64)
                sd[p + "bias"] = layer.bias
                sd[p + "mult"] = layer.mult
                sd[p + "shift"] = layer.shift
                sd[p + "meta"] = torch.tensor([kinds[layer.out], layer.up, *layer.pad, layer.lo, layer.hi])
                if layer.thresholds is not None:
                    sd[p + "thresholds"] = layer.thresholds
        return sd

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], source: str = "integer prior") -> "IntPrior":
        """Parse (untrusted: every shape and value is checked) and prove the bounds."""
        try:
            fmt = [int(v) for v in sd["format"].tolist()]
            if fmt[:5] != [FORMAT, MEAN_BITS, Z_BITS, INPUT_MAX, MEAN_MAX]:
                raise CheckpointError(f"{source}: integer-prior format {fmt[:5]}, this build reads "
                                      f"{[FORMAT, MEAN_BITS, Z_BITS, INPUT_MAX, MEAN_MAX]}")
            M = fmt[5]
            groups = tuple(int(g) for g in sd["groups"].tolist())
            if not 1 <= len(groups) <= 16 or sum(groups) != M or min(groups) < 1:
                raise CheckpointError(f"{source}: groups {list(groups)} do not sum to M={M}")
            codec_sha = bytes(sd["codec_sha256"].to(torch.uint8).tolist()).hex()
            kinds = {0: "relu", 1: "linear", 2: "params"}

            def net(name: str) -> IntNet:
                layers, i = [], 0
                while f"{name}.{i}.weight" in sd:
                    p = f"{name}.{i}."
                    w = sd[p + "weight"]
                    if w.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64) or w.ndim != 4 or \
                            not bool(((w.long() > -(1 << 40)) & (w.long() < (1 << 40))).all()):
                        raise CheckpointError(f"{source}: {p}weight must be a 4-d integer tensor with |w| < 2^40, "
                                              f"got {w.dtype} {tuple(w.shape)}")
                    o = w.shape[0]
                    meta = [int(v) for v in sd[p + "meta"].tolist()]
                    if len(meta) != 8 or meta[0] not in kinds or meta[1] not in (1, 2) or \
                            not all(0 <= v <= 8 for v in meta[2:6]) or not -(1 << 20) <= meta[6] <= meta[7] <= 1 << 20:
                        raise CheckpointError(f"{source}: {p}meta {meta} out of range")
                    cols = {k: sd[p + k] for k in ("mult", "shift")}
                    for k, v in cols.items():
                        if v.dtype != torch.int64 or tuple(v.shape) != ((o // 2,) if meta[0] == 2 else (o,)):
                            raise CheckpointError(f"{source}: {p}{k} must be int64 of one value per output")
                    bias, thresholds = sd[p + "bias"], None
                    if meta[0] == 2:
                        thresholds = sd[p + "thresholds"]
                        if thresholds.dtype != torch.int64 or tuple(thresholds.shape)[0] != o // 2 or \
                                thresholds.ndim != 2 or not bool((thresholds[:, 1:] >= thresholds[:, :-1]).all()):
                            raise CheckpointError(f"{source}: {p}thresholds must be int64 (O/2, levels-1), sorted")
                    if bias.dtype != torch.int64 or tuple(bias.shape) != (o,) or \
                            not bool((bias.abs() < (1 << 52)).all() & (bias > -(1 << 52)).all()):
                        raise CheckpointError(f"{source}: {p}bias must be int64 of one value per output, |b| < 2^52")
                    if not bool((cols["mult"] > 0).all() & (cols["mult"] < (1 << 40)).all()):
                        raise CheckpointError(f"{source}: {p}mult must be in 1..2^40")
                    layers.append(IntLayer(weight=w, bias=bias, mult=cols["mult"], shift=cols["shift"], lo=meta[6],
                                           hi=meta[7], out=kinds[meta[0]], up=meta[1], pad=tuple(meta[2:6]),
                                           thresholds=thresholds))
                    i += 1
                if not layers:
                    raise CheckpointError(f"{source}: network {name} missing")
                return IntNet(layers)

            prior = cls(groups=groups, M=M, codec_sha256=codec_sha, h_s=net("h_s"),
                        cc={k: net(f"cc.{k}") for k in range(1, len(groups))},
                        cp={k: net(f"cp.{k}") for k in range(len(groups))},
                        pa={k: net(f"pa.{k}") for k in range(len(groups))}, z_offset=sd["z_offset"],
                        z_clip=sd["z_clip"], y_clip=sd["y_clip"])
        except KeyError as exc:
            raise CheckpointError(f"{source}: not an integer prior ({exc.args[0]!r} missing)") from None
        if prior.z_offset.dtype != torch.int64 or prior.z_offset.ndim != 1 or \
                prior.z_offset.numel() != prior.h_s.layers[0].weight.shape[1] or \
                int(prior.z_offset.abs().max()) > INPUT_MAX:
            raise CheckpointError(f"{source}: z_offset must be int64, one per hyperprior channel, |v| <= {INPUT_MAX}")
        for name, clip, n in (("z_clip", prior.z_clip, prior.z_offset.numel()), ("y_clip", prior.y_clip, M)):
            if clip.dtype != torch.int64 or tuple(clip.shape) != (n,) or int(clip.min()) < 0 or \
                    int(clip.max()) > INPUT_MAX:
                raise CheckpointError(f"{source}: {name} must be int64, {n} values in 0..{INPUT_MAX}")
        _check_shapes(prior, source)
        prior.check_bounds()
        return prior


def _check_shapes(prior: IntPrior, source: str) -> None:
    """Each network's layers chain (outputs of one = inputs of the next), and the outputs are the sizes the
    entropy path expects; checked before any of it runs."""
    g, M = prior.groups, prior.M
    expect_out = {"h_s": 2 * M, **{f"cc.{k}": 2 * g[k] for k in prior.cc},
                  **{f"cp.{k}": 2 * g[k] for k in prior.cp}, **{f"pa.{k}": 2 * g[k] for k in prior.pa}}
    for name, net in prior.nets():
        for a, b in zip(net.layers, net.layers[1:]):
            if a.weight.shape[0] != b.weight.shape[1] or a.out == "params":
                raise CheckpointError(f"{source}: {name}: layer outputs {a.weight.shape[0]} channels, the next "
                                      f"takes {b.weight.shape[1]}")
        last = net.layers[-1]
        if last.weight.shape[0] != expect_out[name] or (last.out == "params") != name.startswith("pa."):
            raise CheckpointError(f"{source}: {name} gives {last.weight.shape[0]} {last.out} outputs, expected "
                                  f"{expect_out[name]}")
        for layer in net.layers:
            kh, kw = layer.weight.shape[2:]
            if kh != kw or kh not in (1, 3, 5) or any(p >= kh for p in layer.pad):
                raise CheckpointError(f"{source}: {name}: kernel {kh}x{kw} with padding {layer.pad} not supported")


def load_int_prior(path: str | Path, expected_sha256: str | None = None, *, codec_sha256: str | None = None
                   ) -> IntPrior:
    """Read a sidecar through the one checkpoint reader (size cap, sha256, no pickle), parse and prove it."""
    sd = read_state_dict(path, expected_sha256=expected_sha256, max_bytes=64 << 20,
                         mismatch_hint="the pass was encoded with another integer prior of this codec")
    prior = IntPrior.from_state_dict(sd.tensors, str(path))
    if codec_sha256 and prior.codec_sha256 != codec_sha256:
        raise CheckpointError(f"{path}: integer prior of codec {prior.codec_sha256[:16]}..., not of the loaded "
                              f"codec {codec_sha256[:16]}...; {quantise_hint(None)}")
    prior.sha256 = sd.sha256
    return prior


#: A codec checkpoint outside the registry finds its integer prior beside it: ``NAME.pt`` -> ``NAME.int.pt``.
SIDECAR_SUFFIX = ".int.pt"


def sidecar_path(checkpoint: str | Path) -> Path:
    """Where a codec checkpoint's integer prior lies when no registry entry names it: ``NAME.int.pt`` beside
    ``NAME.pt`` (the name the quantiser writes, ``benchmarks/int_prior_quantise.py``)."""
    p = Path(checkpoint)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def quantise_hint(checkpoint: str | Path | None) -> str:
    """How to make a codec's integer prior, as one line for an error or a log note."""
    return (f"quantise it (writes {sidecar_path(checkpoint or 'CODEC.pt').name} beside it): python "
            f"benchmarks/int_prior_quantise.py TRAIN_IMAGE_DIR --codecs {checkpoint or 'CODEC'}")


def _registry_int_prior(codec):
    """The registry entries of a loaded codec (same sha256) that name an integer prior."""
    from .registry import load_registry

    for entry in load_registry().models.values():
        if entry.kind == "codec" and entry.sha256 == codec.sha256 and entry.int_prior is not None:
            yield entry


def has_int_prior(codec) -> bool:
    """Whether a loaded codec has an integer prior to use: a registry entry with its sha256 names one, or
    ``NAME.int.pt`` lies beside the checkpoint. Says nothing of the file's soundness: loading it
    (:func:`int_prior_for`) proves it, and a named but damaged or missing sidecar is an error there, never a
    reason to pick another mode."""
    if any(True for _ in _registry_int_prior(codec)):
        return True
    return bool(codec.path) and sidecar_path(codec.path).is_file()


def int_prior_for(codec, expected_sha256: str | None = None) -> IntPrior:
    """The integer prior of a loaded codec (:class:`~groundstation.codec.LoadedCodec`): the registry entry
    with the codec's sha256 names it (``int_prior``), else ``NAME.int.pt`` beside the checkpoint.
    ``expected_sha256`` (a pass header's ``codec.int_prior_sha256``) must match the file when given."""
    for entry in _registry_int_prior(codec):
        if expected_sha256 and expected_sha256 != entry.int_prior.sha256:
            continue
        return load_int_prior(entry.int_prior.resolved_path(), entry.int_prior.sha256,
                              codec_sha256=codec.sha256)
    beside = sidecar_path(codec.path) if codec.path else None
    if beside is not None and beside.is_file():
        return load_int_prior(beside, expected_sha256, codec_sha256=codec.sha256)
    raise CheckpointError(
        f"{codec.path}: no integer prior for this codec (sha256 {codec.sha256[:16]}...) "
        + (f"with sha256 {expected_sha256[:16]}... " if expected_sha256 else "")
        + f"in the registry or beside it, which the int entropy mode needs; {quantise_hint(codec.path)}; or "
          "encode with --entropy float64")


# ----------------------------------------------------------------------------------------- entropy path
@contextlib.contextmanager
def exact_kernels() -> Iterator[None]:
    """No TF32 (10-bit mantissas: integer products would round) for the block; restored afterwards. cuBLAS
    and the CPU BLAS compute a matrix product as sums of products, exact under the proven bounds whatever
    order or split-K reduction they choose; no convolution algorithm (Winograd, FFT) is involved."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


def _clip_in(x: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
    c = clip.to(x.device)[None, :, None, None]
    return torch.minimum(torch.maximum(x, -c), c)


class _Tables:
    """One entropy model's CDF tables as the rANS coder takes them, converted once (not on every call)."""

    def __init__(self, em: torch.nn.Module) -> None:
        self.coder = em.entropy_coder
        self.cdf = em._quantized_cdf.tolist()
        self.lengths = em._cdf_length.reshape(-1).int().tolist()
        self.offsets = em._offset.reshape(-1).int().tolist()
        self.levels = len(self.cdf)

    def encode(self, symbols: torch.Tensor, indexes: torch.Tensor) -> bytes:
        return self.coder.encode_with_indexes(symbols.reshape(-1).int().tolist(), indexes.reshape(-1).tolist(),
                                              self.cdf, self.lengths, self.offsets)

    def decode(self, string: bytes, indexes: torch.Tensor) -> torch.Tensor:
        values = self.coder.decode_with_indexes(string, indexes.reshape(-1).tolist(), self.cdf, self.lengths,
                                                self.offsets)
        return torch.tensor(values, dtype=torch.int32).reshape(indexes.shape)


class IntEntropyCoder:
    """Codes ELIC's latents with one codec's entropy tables and its :class:`IntPrior`.

    ``witness(symbols)`` is called with every integer symbol tensor in coding order (z when ``witness_z``,
    then each group's anchors and non-anchors), on the encoder and the decoder alike.
    """

    def __init__(self, model: torch.nn.Module, prior: IntPrior) -> None:
        lc = model.latent_codec
        self.eb = lc["hyper"].entropy_bottleneck
        self.h_a = lc["hyper"].h_a
        self.groups = list(prior.groups)
        if len(self.groups) != len(model.groups) or list(model.groups) != self.groups:
            raise CheckpointError(f"integer prior for groups {self.groups}, codec has {list(model.groups)}")
        self.ckbd = [lc["y"].latent_codec[f"y{k}"] for k in range(len(self.groups))]
        self.z_tables = _Tables(self.eb)
        self.y_tables = [_Tables(c.latent_codec["y"].gaussian_conditional) for c in self.ckbd]
        if any(t.levels != self.prior_levels(prior, k) + 1 for k, t in enumerate(self.y_tables)):
            raise CheckpointError("integer prior thresholds do not match the codec's scale table")
        self.prior = prior

    @staticmethod
    def prior_levels(prior: IntPrior, k: int) -> int:
        return int(prior.pa[k].layers[-1].thresholds.shape[1])

    def _group(self, k: int, h: torch.Tensor, y_int: list[torch.Tensor], y_k: torch.Tensor | None,
               strings: list[bytes] | None, witness) -> tuple[torch.Tensor, list[bytes]]:
        """Code group k (the encoder when ``y_k`` is given, else the decoder of ``strings``): (its latents on
        the 2^-MEAN_BITS grid as int64, its two strings: anchors, non-anchors)."""
        pr, ck, tables = self.prior, self.ckbd[k], self.y_tables[k]
        n, _, hh, ww = h.shape
        if k == 0:
            side = h
        else:
            ctx_in = y_int[0] if k == 1 else torch.cat([y_int[0], y_int[k - 1]], dim=1)
            side = torch.cat([pr.cc[k](_clip_in(ctx_in, pr.cc[k].layers[0].in_max)), h], dim=1)
        side_ = ck.unembed(side)
        y_ = ck.unembed(y_k) if y_k is not None else None
        full = torch.zeros((n, self.groups[k], hh, ww), dtype=torch.int64, device=h.device)
        out_strings = []
        for i in range(2):  # anchors (no spatial context), then non-anchors (context from the anchors)
            if i == 0:
                ctx = side_.new_zeros((n, 2 * self.groups[k], hh, ww // 2))
            else:
                ctx = ck.unembed(pr.cp[k](_clip_in(full, pr.cp[k].layers[0].in_max)))[1]
            means, idx = pr.pa[k].params(torch.cat([ctx, side_[i]], dim=1))
            idx_cpu = idx.cpu()
            if y_ is not None:  # encoder: any integer symbol is valid; the nearest one to y - mean
                sym = torch.round(y_[i].double() - means.double() / (1 << MEAN_BITS)).to(torch.int32)
                string = tables.encode(sym[0].cpu(), idx_cpu[0])
            else:
                string = strings[i]
                sym = tables.decode(string, idx_cpu[0])[None].to(h.device)
            witness(sym)
            out_strings.append(string)
            half = full.new_zeros((2, *sym.shape))
            half[i] = sym.to(torch.int64) * (1 << MEAN_BITS) + means
            full = full + ck.embed(half)  # the other parity is still zero
        return full, out_strings

    def _z(self, z_string: bytes, z_hw: tuple[int, int], device, witness) -> torch.Tensor:
        c = self.eb._quantized_cdf.size(0)
        indexes = torch.arange(c, dtype=torch.int32)[:, None, None].expand(c, *z_hw)
        z_sym = self.z_tables.decode(z_string, indexes)[None]
        witness(z_sym)
        return z_sym.to(device)

    def compress(self, y: torch.Tensor, witness, witness_z: bool = True
                 ) -> tuple[list[bytes], tuple[int, int], torch.Tensor]:
        """(strings: y anchors/non-anchors per group then z, z's (h, w), y_hat float32) of one latent."""
        if y.shape[0] != 1:
            raise ValueError("the integer entropy path codes one tile at a time")
        z = self.h_a(y)
        [z_string] = self.eb.compress(z)
        z_hw = tuple(int(v) for v in z.shape[-2:])
        z_sym = self._z(z_string, z_hw, y.device, witness if witness_z else _ignore)
        return self._code(y, None, z_sym, z_string, witness)

    def decompress(self, strings: list[bytes], z_hw: tuple[int, int], device, witness, witness_z: bool = True
                   ) -> torch.Tensor:
        """y_hat (float32, on ``device``) of one tile's strings."""
        if len(strings) != 2 * len(self.groups) + 1:
            raise ValueError(f"{len(strings)} strings, the codec codes {2 * len(self.groups) + 1}")
        z_sym = self._z(strings[-1], z_hw, device, witness if witness_z else _ignore)
        return self._code(None, strings, z_sym, strings[-1], witness)[2]

    def _code(self, y, strings, z_sym, z_string, witness):
        with exact_kernels():
            off = self.prior.z_offset.to(z_sym.device)[None, :, None, None]
            h = self.prior.h_s(_clip_in(z_sym.to(torch.int64) * (1 << Z_BITS) + off, self.prior.z_clip))
            y_groups = torch.split(y, self.groups, dim=1) if y is not None else [None] * len(self.groups)
            y_int, out = [], []
            for k in range(len(self.groups)):
                full, s = self._group(k, h, y_int, y_groups[k], strings[2 * k: 2 * k + 2] if strings else None,
                                      witness)
                y_int.append(full)
                out.extend(s)
        y_hat = torch.cat(y_int, dim=1).to(torch.float32) / (1 << MEAN_BITS)  # exact for |y| < 2^20
        return [*out, z_string], tuple(int(v) for v in z_sym.shape[-2:]), y_hat


def _ignore(_symbols: torch.Tensor) -> None:
    pass


# ------------------------------------------------------------------------------------------- quantising
def _requant(ratio: torch.Tensor, bits: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer (multiplier, shift) with multiplier / 2^shift = ratio to ``bits`` significant bits."""
    ratio = ratio.double().clamp(min=1e-30)
    shift = (bits - torch.ceil(torch.log2(ratio))).clamp(1, 62).to(torch.int64)
    mult = torch.round(ratio * torch.pow(2.0, shift.double())).to(torch.int64)
    return mult, shift


def _conv_form(module: torch.nn.Module) -> tuple[torch.Tensor, int, tuple[int, int, int, int]]:
    """(weight as a stride-1 convolution, zero-insertion factor, padding) of a Conv2d or ConvTranspose2d."""
    w = module.weight.detach().double()
    if hasattr(module, "mask"):  # CheckerboardMaskedConv2d zeroes the masked taps in its forward
        w = w * module.mask.double()
    k = w.shape[-1]
    if isinstance(module, torch.nn.ConvTranspose2d):
        (s,), (p,), (op,) = module.stride[:1], module.padding[:1], module.output_padding[:1]
        lo, hi = k - 1 - p, k - 1 - p + op
        return w.transpose(0, 1).flip(2, 3), s, (lo, hi, lo, hi)
    if module.stride[0] != 1:
        raise CheckpointError(f"{module}: only stride-1 convolutions occur in ELIC's prior networks")
    p = module.padding[0]
    return w, 1, (p, p, p, p)


def _quantise_layer(module: torch.nn.Module, s_in: torch.Tensor, out: str, s_out: float,
                    scale_table: torch.Tensor | None = None) -> IntLayer:
    """Integer weights (per-output-channel scale), bias and requantisation of one convolution whose input
    has per-channel scales ``s_in`` (real = integer x scale) and whose output is requantised to ``s_out``."""
    w, up, pad = _conv_form(module)
    w = w * s_in.double()[None, :, None, None]
    qmax = (1 << (WEIGHT_BITS - 1)) - 1
    s_w = w.abs().amax(dim=(1, 2, 3)).clamp(min=1e-30) / qmax
    w_int = torch.round(w / s_w[:, None, None, None]).to(torch.int64)
    bias = torch.round(module.bias.detach().double() / s_w).to(torch.int64)
    lin = (1 << (LINEAR_BITS - 1)) - 1
    if out == "params":
        half = w.shape[0] // 2
        mult, shift = _requant(s_w[:half] * (1 << MEAN_BITS))
        # scale > s_i  <=>  acc * s_w > s_i  <=>  acc > floor(s_i / s_w)  (acc an integer)
        t = torch.floor(scale_table.double()[None, :-1] / s_w[half:, None]).clamp(-(1 << 60), 1 << 60)
        return IntLayer(weight=w_int, bias=bias, mult=mult, shift=shift, lo=-MEAN_MAX, hi=MEAN_MAX, out=out,
                        up=up, pad=pad, thresholds=t.to(torch.int64))
    mult, shift = _requant(s_w / s_out)
    lo, hi = (0, (1 << HIDDEN_BITS) - 1) if out == "relu" else (-lin, lin)
    return IntLayer(weight=w_int, bias=bias, mult=mult, shift=shift, lo=lo, hi=hi, out=out, up=up, pad=pad)


def _clip_for(top: torch.Tensor) -> torch.Tensor:
    """Per-channel clip: twice the largest value seen, rounded up to 2^k - 1, at most INPUT_MAX."""
    k = torch.ceil(torch.log2(2 * top.double().clamp(min=1) + 1))
    return (torch.pow(2.0, k) - 1).clamp(max=INPUT_MAX).to(torch.int64)


def calibrate(model: torch.nn.Module, latents: list[torch.Tensor]) -> dict[int, tuple[float, float]]:
    """Largest output and largest |output| of every prior convolution, over the float model's own coding of
    ``latents`` (g_a outputs of calibration images): {id(module): (max, max |.|)}."""
    lc = model.latent_codec
    convs = [*lc["hyper"].h_s, *(m for c in lc["y"].channel_context.values() for m in c)]
    for k in range(len(model.groups)):
        ck = lc["y"].latent_codec[f"y{k}"]
        convs += [ck.context_prediction, *ck.entropy_parameters]
    convs = [m for m in convs if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    seen: dict[int, tuple[float, float]] = {id(m): (0.0, 0.0) for m in convs}

    def hook(mod, _inputs, o):
        top, mag = seen[id(mod)]
        seen[id(mod)] = (max(top, float(o.max())), max(mag, float(o.abs().max())))

    hooks = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode():
            for y in latents:
                lc.compress(y)
    finally:
        for h in hooks:
            h.remove()
    return seen


def quantise(model: torch.nn.Module, latents: list[torch.Tensor], codec_sha256: str) -> IntPrior:
    """Post-training quantisation of a Chandelier ELIC's prior networks (weights per output channel, activation
    ranges from :func:`calibrate` on ``latents``); the result is proven exact (:meth:`IntPrior.check_bounds`)."""
    seen = calibrate(model, latents)
    lc = model.latent_codec
    groups = list(model.groups)
    M = sum(groups)
    relu_top, lin_top = (1 << HIDDEN_BITS) - 1, (1 << (LINEAR_BITS - 1)) - 1

    def chain(modules, s_in: torch.Tensor, outs: list[str], scale_table=None) -> tuple[IntNet, float]:
        convs = [m for m in modules if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
        layers = []
        for m, out in zip(convs, outs):
            top, mag = seen[id(m)]
            s_out = max(top, 1e-6) / relu_top if out == "relu" else max(mag, 1e-6) / lin_top
            layers.append(_quantise_layer(m, s_in, out, s_out, scale_table))
            s_in = torch.full((m.weight.shape[1] if isinstance(m, torch.nn.ConvTranspose2d)
                               else m.weight.shape[0],), s_out, dtype=torch.float64)
        return IntNet(layers), float(s_in[0])

    eb = lc["hyper"].entropy_bottleneck
    medians = eb._get_medians().detach().double().reshape(-1)
    z_offset = torch.round(medians * (1 << Z_BITS)).to(torch.int64)
    with torch.inference_mode():
        y_top = torch.stack([y.abs().amax(dim=(0, 2, 3)) for y in latents]).amax(0).double()
        z_top = torch.stack([(torch.round(lc["hyper"].h_a(y).double() - medians[None, :, None, None]).abs()
                              .amax(dim=(0, 2, 3))) for y in latents]).amax(0)
    y_clip = _clip_for((y_top + 1) * (1 << MEAN_BITS))
    z_clip = _clip_for(z_top * (1 << Z_BITS) + z_offset.abs())
    h_s, s_h = chain(lc["hyper"].h_s, torch.full((len(medians),), 2.0 ** -Z_BITS, dtype=torch.float64),
                     ["relu", "relu", "linear"])
    y_scale = 2.0 ** -MEAN_BITS
    cc, s_cc = {}, {}
    for k in range(1, len(groups)):
        n_in = groups[0] + (groups[k - 1] if k > 1 else 0)
        cc[k], s_cc[k] = chain(lc["y"].channel_context[f"y{k}"], torch.full((n_in,), y_scale, dtype=torch.float64),
                               ["relu", "relu", "linear"])
    cp, pa = {}, {}
    for k in range(len(groups)):
        ck = lc["y"].latent_codec[f"y{k}"]
        cp[k], s_cp = chain([ck.context_prediction], torch.full((groups[k],), y_scale, dtype=torch.float64),
                            ["linear"])
        parts = [torch.full((2 * groups[k],), s_cp)]
        if k > 0:
            parts.append(torch.full((2 * groups[k],), s_cc[k]))
        parts.append(torch.full((2 * M,), s_h))
        table = ck.latent_codec["y"].gaussian_conditional.scale_table.detach()
        pa[k], _ = chain(ck.entropy_parameters, torch.cat(parts).double(), ["relu", "relu", "params"], table)
    prior = IntPrior(groups=tuple(groups), M=M, codec_sha256=codec_sha256, h_s=h_s, cc=cc, cp=cp, pa=pa,
                     z_offset=z_offset, z_clip=z_clip, y_clip=y_clip)
    prior.check_bounds()
    return prior
