"""ELIC (CompressAI ``Elic2022Chandelier``): building, checkpoint loading, and tile encode/decode.

One loader accepts
* CompressAI checkpoints of ``Elic2022Chandelier`` (raw state dict, or wrapped in ``state_dict``/``network``);
* the INN-RSIC authors' ELIC checkpoints (their training format: a dict with ``state_dict`` and empty entropy
  tables; their inference format: a raw state dict with filled tables), renamed with :data:`AUTHORS_KEY_RULES`.

Filled entropy tables are used as they are. Recomputing them (``update(force=True)``) under CompressAI 1.2.8
changes the z tables of a CompressAI 1.1.5 checkpoint and its bitstreams then decode to garbage, so that only
happens for checkpoints whose tables are empty, with a log line saying so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .container import ENTROPY_MODES, WITNESS_KIND, WITNESS_KINDS
from .errors import CheckpointError, DesyncError
from .checkpoints import read_state_dict

log = logging.getLogger(__name__)

ARCHITECTURE = "elic2022-chandelier"
#: Codec input height/width must be multiples of this (four stride-2 layers in g_a, two more in h_a).
CODEC_ALIGN = 64


@dataclass(frozen=True)
class CodecArch:
    """Architecture parameters of a Chandelier ELIC; everything needed to build it."""

    N: int = 192
    M: int = 320
    groups: tuple[int, ...] = (16, 16, 32, 64, 192)

    def __post_init__(self) -> None:
        if sum(self.groups) != self.M:
            raise CheckpointError(f"ELIC groups {list(self.groups)} sum to {sum(self.groups)}, not M={self.M}")

    @classmethod
    def default_groups(cls, N: int, M: int) -> "CodecArch":
        return cls(N=N, M=M, groups=(16, 16, 32, 64, M - 128))

    def as_dict(self) -> dict:
        return {"N": self.N, "M": self.M, "groups": list(self.groups)}


def build_codec(arch: CodecArch) -> torch.nn.Module:
    """A fresh (random-init) ``Elic2022Chandelier`` of the given size."""
    from compressai.models import Elic2022Chandelier

    return Elic2022Chandelier(N=arch.N, M=arch.M, groups=list(arch.groups))


# --------------------------------------------------------------------------------------------- checkpoints
#: Authors' (ELiC-ReImplemetation / INN-RSIC) names -> CompressAI 1.2.8 names. ``{k}`` is a group index.
#: ``gaussian_conditional.*`` is shared by all groups in their code and copied to each group's model here.
AUTHORS_KEY_RULES: list[tuple[str, str]] = [
    (r"^g_a\.(.*)$", r"g_a.\1"),
    (r"^g_s\.(.*)$", r"g_s.\1"),
    (r"^h_a\.(.*)$", r"latent_codec.hyper.h_a.\1"),
    (r"^h_s\.(.*)$", r"latent_codec.hyper.h_s.\1"),
    # CompressAI 1.1.5 stored the factorized prior's parameters as _matrix{i}/_bias{i}/_factor{i}.
    (r"^entropy_bottleneck\._matrix(\d+)$", r"latent_codec.hyper.entropy_bottleneck.matrices.\1"),
    (r"^entropy_bottleneck\._bias(\d+)$", r"latent_codec.hyper.entropy_bottleneck.biases.\1"),
    (r"^entropy_bottleneck\._factor(\d+)$", r"latent_codec.hyper.entropy_bottleneck.factors.\1"),
    (r"^entropy_bottleneck\.(.*)$", r"latent_codec.hyper.entropy_bottleneck.\1"),
    # cc_transforms.{i} is the channel context of group i+1 ("g_ch^(k)").
    (r"^cc_transforms\.(\d+)\.(.*)$", lambda m: f"latent_codec.y.channel_context.y{int(m[1]) + 1}.{m[2]}"),
    (r"^context_prediction\.(\d+)\.(.*)$", r"latent_codec.y.latent_codec.y\1.context_prediction.\2"),
    # ParamAggregation outputs (means, scales), the order CompressAI's chunks=("means", "scales") expects.
    (r"^ParamAggregation\.(\d+)\.(.*)$", r"latent_codec.y.latent_codec.y\1.entropy_parameters.\2"),
]


def detect_codec_format(sd: dict[str, torch.Tensor]) -> str:
    """``compressai`` or ``inn-rsic`` (the authors' names); raises for anything else."""
    if any(k.startswith("latent_codec.") for k in sd):
        return "compressai"
    if any(k.startswith(("cc_transforms.", "ParamAggregation.")) for k in sd):
        return "inn-rsic"
    raise CheckpointError(
        "not an ELIC (Elic2022Chandelier) checkpoint: found neither CompressAI names (latent_codec.*) nor the "
        f"INN-RSIC authors' names (cc_transforms.*, ParamAggregation.*); first keys: {list(sd)[:4]}"
    )


def rename_authors_keys(sd: dict[str, torch.Tensor], n_groups: int) -> dict[str, torch.Tensor]:
    """Map the authors' ELIC names to CompressAI 1.2.8's (see :data:`AUTHORS_KEY_RULES`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("gaussian_conditional."):
            rest = key[len("gaussian_conditional.") :]
            for k in range(n_groups):
                out[f"latent_codec.y.latent_codec.y{k}.y.gaussian_conditional.{rest}"] = value.clone()
            continue
        for pattern, repl in AUTHORS_KEY_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise CheckpointError(f"unexpected key in an INN-RSIC ELIC checkpoint: {key!r}")
    return out


def infer_codec_arch(sd: dict[str, torch.Tensor]) -> CodecArch:
    """Read N, M and the channel groups back from tensor shapes (CompressAI names)."""
    try:
        N = sd["g_a.0.weight"].shape[0]
        M = sd["g_a.13.weight"].shape[0]
        groups = []
        k = 0
        while f"latent_codec.y.latent_codec.y{k}.context_prediction.weight" in sd:
            groups.append(int(sd[f"latent_codec.y.latent_codec.y{k}.context_prediction.weight"].shape[1]))
            k += 1
    except KeyError as exc:
        raise CheckpointError(f"ELIC checkpoint lacks {exc.args[0]!r}: cannot infer its architecture") from exc
    return CodecArch(N=int(N), M=int(M), groups=tuple(groups))


def tables_state(sd: dict[str, torch.Tensor]) -> str:
    """``filled``, ``empty`` or ``partial``: are the CDF tables in this state dict usable as they are?"""
    cdfs = [v for k, v in sd.items() if k.endswith("._quantized_cdf")]
    filled = [v.numel() > 0 for v in cdfs]
    if filled and all(filled):
        return "filled"
    if not any(filled):
        return "empty"
    return "partial"


@dataclass
class LoadedCodec:
    model: torch.nn.Module
    arch: CodecArch
    sha256: str
    source_format: str
    tables: str  # "filled" (from the checkpoint) or "computed" (update() ran on load)
    path: str = ""
    float64: dict = field(default_factory=dict, repr=False)  # float64 CPU copies of parts, made on first use
    copies: dict = field(default_factory=dict, repr=False)  # parts placed on another device (g_s on a GPU)


def load_codec(
    path: str | Path, expected_sha256: str | None = None, *, arch: CodecArch | None = None
) -> LoadedCodec:
    """Load any supported ELIC checkpoint strictly; check its sha256 when one is expected."""
    sd = read_state_dict(path, expected_sha256=expected_sha256 or None,
                         mismatch_hint="the pass was encoded with another codec checkpoint: give the matching file "
                                       "as the codec")
    return codec_from_state_dict(sd.tensors, digest=sd.sha256, path=str(path), arch=arch)


#: The largest g_s sidecar read (the registry's are ~4 MB).
MAX_MOSAIC_G_S_BYTES = 64 << 20


def load_mosaic_g_s(codec: LoadedCodec, sha256: str) -> torch.nn.Module:
    """The g_s fine-tuned for synthesis over the latent mosaic that the registry names for ``codec``
    (:func:`groundstation.registry.mosaic_synthesis_for`), whose file must have ``sha256``: read through the one
    checkpoint reader (size cap, sha256, no pickle) and checked against the codec's g_s (same entries and shapes,
    finite values) before it is loaded into a copy of it."""
    import copy

    from .registry import mosaic_synthesis_for

    ref = mosaic_synthesis_for(codec.sha256)
    if ref is None or ref.sha256 != sha256:
        named = f"names {ref.sha256[:16]}..." if ref else "names none"
        raise CheckpointError(
            f"mosaic synthesis weights sha256 {sha256[:16]}... of codec {codec.sha256[:16]}... are not in the "
            f"registry (configs/models.yaml {named} for this codec); the product was made with other weights: "
            "restore them in the registry, or reprocess the pass")
    path = ref.resolved_path()
    sd = read_state_dict(path, expected_sha256=sha256, max_bytes=MAX_MOSAIC_G_S_BYTES,
                         mismatch_hint="the registry's mosaic_synthesis entry must give the file's sha256")
    g_s = copy.deepcopy(codec.model.g_s)
    own = g_s.state_dict()
    if set(sd.tensors) != set(own):
        missing, extra = sorted(set(own) - set(sd.tensors)), sorted(set(sd.tensors) - set(own))
        raise CheckpointError(f"{path}: not a g_s of this codec ({len(missing)} entries missing, e.g. "
                              f"{missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]})")
    for k, v in sd.tensors.items():
        if tuple(v.shape) != tuple(own[k].shape) or not v.is_floating_point() or not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: entry {k} is {tuple(v.shape)} {v.dtype}, the codec's g_s needs "
                                  f"{tuple(own[k].shape)} finite floats")
    g_s.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.tensors.items()})
    return g_s.to("cpu").eval()


@dataclass(frozen=True)
class CodecInfo:
    """What a codec checkpoint is, read from its state dict without building the network (no CompressAI
    import): what a flow records in provenance and sizes the latent store by (:func:`inspect_codec`)."""

    arch: CodecArch
    sha256: str
    source_format: str
    tables: str  # "filled" (in the checkpoint) or "computed" (empty: update() runs where it is loaded)


def inspect_codec(path: str | Path, expected_sha256: str | None = None) -> CodecInfo:
    """Read and check an ELIC checkpoint as :func:`load_codec` does (size cap, sha256 before parsing,
    ``weights_only``, format, architecture, entropy tables) without building the model: a process that only
    plans a run (the flow) does not pay for importing CompressAI and building ELIC, which the workers that
    decode do anyway. A file whose sha256 the pass pins is the one its encoder loaded."""
    sd = read_state_dict(path, expected_sha256=expected_sha256 or None,
                         mismatch_hint="the pass was encoded with another codec checkpoint: give the matching file "
                                       "as the codec")
    _, arch, fmt, state = _checked_state(sd.tensors, str(path), None)
    return CodecInfo(arch=arch, sha256=sd.sha256, source_format=fmt,
                     tables="filled" if state == "filled" else "computed")


def _checked_state(sd: dict[str, torch.Tensor], path: str,
                   arch: CodecArch | None) -> tuple[dict[str, torch.Tensor], CodecArch, str, str]:
    """The state dict under CompressAI's names, its architecture, source format and tables state; raises
    CheckpointError for anything but a usable ELIC checkpoint."""
    fmt = detect_codec_format(sd)
    if fmt == "inn-rsic":
        n_groups = len({k.split(".")[1] for k in sd if k.startswith("context_prediction.")})
        sd = rename_authors_keys(sd, n_groups)
    arch = arch or infer_codec_arch(sd)
    state = tables_state(sd)
    if state == "partial":
        raise CheckpointError(
            f"{path}: some entropy tables are filled and others are empty; re-export the checkpoint with "
            "`gsp train-codec --export` (or CompressAI's update_model) so that all of them are filled"
        )
    return sd, arch, fmt, state


def codec_from_state_dict(
    sd: dict[str, torch.Tensor], *, digest: str = "", path: str = "<memory>", arch: CodecArch | None = None
) -> LoadedCodec:
    sd, arch, fmt, state = _checked_state(sd, path, arch)
    model = build_codec(arch)
    try:
        model.load_state_dict(sd, strict=True)  # CompressAI resizes the CDF buffers to the checkpoint's
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not match Elic2022Chandelier{arch.as_dict()}: {_first_lines(exc)}")
    if state == "empty":
        log.info("%s: entropy tables are empty (training checkpoint); computing them once with update()", path)
        model.update(force=True)
        tables = "computed"
    else:
        tables = "filled"
    model.eval()
    return LoadedCodec(model=model, arch=arch, sha256=digest, source_format=fmt, tables=tables, path=path)


def _first_lines(exc: Exception, n: int = 6) -> str:
    return " | ".join(str(exc).strip().splitlines()[:n])


# ------------------------------------------------------------------------------------- tile encode/decode
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: leave as is), restoring the previous count after it."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _SymbolWitness:
    """Records the integer symbols every Gaussian conditional codes, in coding order, as a running CRC32.

    The encoder and the decoder see the same symbol sequence exactly when the range decoder stayed in sync,
    so equal witnesses prove a tile decoded to what was encoded (integers: no float tolerance involved).
    """

    def __init__(self, model: torch.nn.Module | None, kind: str = WITNESS_KIND) -> None:
        """``model`` None: nothing is patched; the integer entropy path calls :meth:`update` itself."""
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional

        if kind not in WITNESS_KINDS:
            raise CheckpointError(f"witness kind {kind!r}: this build checks {', '.join(WITNESS_KINDS)}")
        coded = (GaussianConditional, EntropyBottleneck) if kind == WITNESS_KIND else (GaussianConditional,)
        self.covers_z = kind == WITNESS_KIND
        self.crc = 0
        self._patched: list[torch.nn.Module] = []
        for module in (model.modules() if model is not None else ()):
            if isinstance(module, coded):
                orig_dequantize = module.dequantize

                # CompressAI's compress() decodes its own strings to get y_hat, so the encoder and a decoder
                # both pass the decoded integer symbols through dequantize(): record them there.
                def dequantize(inputs, means=None, dtype=torch.float, _d=orig_dequantize):
                    self.update(inputs)
                    return _d(inputs, means, dtype)

                module.dequantize = dequantize
                self._patched.append(module)

    def update(self, symbols: torch.Tensor) -> None:
        arr = symbols.detach().to("cpu", torch.int32).contiguous().numpy()
        self.crc = zlib.crc32(arr.tobytes(), self.crc)

    def close(self) -> None:
        for module in self._patched:
            del module.dequantize
        self._patched.clear()


@dataclass
class EncodedTile:
    strings: list[bytes]
    z_hw: tuple[int, int]
    y_hw: tuple[int, int]
    witness: int
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.strings)


#: How the numbers that choose each symbol's distribution are computed (the header's ``codec.entropy``).
#: ``float32``: CompressAI as it is (this CPU's kernels: a pass may desynchronise on another CPU; the witness
#: catches it). ``float64``: hyper-synthesis, channel and checkerboard context, parameter aggregation and
#: scale-to-index in float64 on the CPU, with float64 as the default dtype (so every intermediate, CompressAI's
#: own buffers included, is float64): bit-identical on every x86 CPU and thread count measured
#: (benchmarks/decode_determinism.py), so a pass decodes on any ground CPU. ``int``: the prior networks in exact
#: integer arithmetic (groundstation/intprior.py, docs/determinism.md): the same integers on every CPU, thread
#: count and GPU by construction, at float32 speed; needs the codec's integer prior (a registry sidecar).
#: (The tuple and the default for new passes live in groundstation.container: ENTROPY_MODES, DEFAULT_ENTROPY.)
#: How pixels are synthesised from the decoded latents (the station's ``decode.synthesis``). ``float32``: g_s
#: on the decoder's device with its own kernels (1 DN differences between CPUs on a few values);
#: ``float64``: g_s in float64 on the CPU, pixels bit-identical on every x86 CPU.
SYNTHESIS_MODES = ("float32", "float64")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@dataclass
class TileCodec:
    """Encodes and decodes single RGB uint8 tiles with one loaded ELIC, at a fixed thread count.

    ``entropy`` and ``synthesis`` choose the numeric modes (:data:`ENTROPY_MODES`, :data:`SYNTHESIS_MODES`);
    the encoder's ``entropy`` is recorded in the pass header and the decoder must use the same.
    ``decode(..., strict=True)`` runs under the encoder's own conditions whatever this codec's settings are:
    CPU, one thread, contiguous NCHW tensors, deterministic algorithms. That is the retry after a witness
    mismatch (benchmarks/decode_determinism.py measures when it is needed).
    """

    codec: LoadedCodec
    device: str = "cpu"
    threads: int | None = 1
    channels_last: bool = False
    entropy: str = "float32"
    synthesis: str = "float32"
    witness_kind: str = WITNESS_KIND  # the pass header's ``witness`` (what the records' CRCs cover)
    #: where float32 synthesis (g_s) runs when decoding, e.g. ``cuda``: the entropy path stays where ``device``
    #: says (the CPU: the witness and the float64 mode are CPU guarantees) and only the pixels move
    synthesis_device: str | None = None
    #: sha256 of the integer prior (``int`` mode): the header's ``codec.int_prior_sha256`` when decoding
    int_prior_sha256: str | None = None
    #: sha256 of the g_s fine-tuned for synthesis over the latent mosaic that ``synthesize(..., mosaic=True)``
    #: runs (the registry's sidecar of this codec: :func:`load_mosaic_g_s`); None: the codec's own g_s
    mosaic_g_s: str | None = None
    _placed: tuple | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.entropy not in ENTROPY_MODES:
            raise CheckpointError(f"entropy mode {self.entropy!r}: this build knows {', '.join(ENTROPY_MODES)}; "
                                  "upgrade the ground-station software")
        if self.synthesis not in SYNTHESIS_MODES:
            raise CheckpointError(f"synthesis mode {self.synthesis!r}: choose one of {', '.join(SYNTHESIS_MODES)}")
        if self.entropy == "int":
            self.int_prior_sha256 = self._int_coder().prior.sha256

    def _int_coder(self):
        """The codec's integer entropy coder (its sidecar found through the registry), made once per codec."""
        key = ("int", self.int_prior_sha256)
        if key not in self.codec.copies:
            from .intprior import IntEntropyCoder, int_prior_for

            self.codec.copies[key] = IntEntropyCoder(self.codec.model, int_prior_for(self.codec,
                                                                                     self.int_prior_sha256))
        return self.codec.copies[key]

    def _model(self, device: str | None = None, channels_last: bool | None = None) -> torch.nn.Module:
        want = (device or self.device, self.channels_last if channels_last is None else channels_last)
        if self._placed != want:
            fmt = torch.channels_last if want[1] else torch.contiguous_format
            self.codec.model.to(device=want[0], memory_format=fmt)
            self._placed = want
        return self.codec.model

    def _float64(self, name: str, tuned: bool = False) -> torch.nn.Module:
        """A float64 CPU copy of ``latent_codec`` or ``g_s`` (``tuned``: the mosaic's g_s), made once per loaded
        codec."""
        key = (name, self.mosaic_g_s) if tuned else name
        if key not in self.codec.float64:
            import copy

            part = self._mosaic_g_s() if tuned else getattr(self.codec.model, name)
            self.codec.float64[key] = copy.deepcopy(part).to("cpu", torch.float64).eval()
        return self.codec.float64[key]

    def _mosaic_g_s(self) -> torch.nn.Module:
        """The g_s fine-tuned for the mosaic (:attr:`mosaic_g_s`), on the CPU, loaded once per loaded codec."""
        key = ("mosaic_g_s", self.mosaic_g_s)
        if key not in self.codec.copies:
            self.codec.copies[key] = load_mosaic_g_s(self.codec, self.mosaic_g_s)
        return self.codec.copies[key]

    def _synthesis(self, model: torch.nn.Module, tuned: bool = False) -> torch.nn.Module:
        """g_s (``tuned``: the mosaic's) on :attr:`synthesis_device` (a copy made once per loaded codec), else
        where it is."""
        g_s = self._mosaic_g_s() if tuned else model.g_s
        # the tuned g_s runs where the codec's would: on the synthesis device, else beside the model
        dev = self.synthesis_device or (str(next(model.g_s.parameters()).device) if tuned else None)
        if not dev or torch.device(dev) == next(g_s.parameters()).device:
            return g_s
        key = (dev, self.mosaic_g_s) if tuned else dev
        if key not in self.codec.copies:
            import copy

            self.codec.copies[key] = copy.deepcopy(g_s).to(dev).eval()
        return self.codec.copies[key]

    def _entropy_path(self, model: torch.nn.Module) -> tuple[torch.nn.Module, contextlib.AbstractContextManager]:
        """(the latent codec that decides the symbols' distributions, the default-dtype context it runs in)."""
        if self.entropy == "float64":
            return self._float64("latent_codec"), _default_dtype(torch.float64)
        return model.latent_codec, contextlib.nullcontext()

    def encode(self, rgb: np.ndarray) -> EncodedTile:
        """``rgb``: (H, W, 3) uint8. Pads (edge replicate) to a multiple of 64; the decoder crops back."""
        h, w = rgb.shape[:2]
        x = _pad_to(_to_tensor(rgb, self.device), CODEC_ALIGN)
        model = self._model()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.entropy == "int":
            witness = _SymbolWitness(None, self.witness_kind)
            with torch_threads(self.threads), torch.inference_mode():
                y = model.g_a(x)
                strings, z_hw, _ = self._int_coder().compress(y, witness.update, witness.covers_z)
            return EncodedTile(strings=strings, z_hw=z_hw, y_hw=(int(y.shape[-2]), int(y.shape[-1])),
                               witness=witness.crc, height=h, width=w)
        latent, entropy_dtype = self._entropy_path(model)
        witness = _SymbolWitness(latent, self.witness_kind)
        try:
            with torch_threads(self.threads), torch.inference_mode():
                y = model.g_a(x)
                with entropy_dtype:
                    out = latent.compress(y.to("cpu", torch.float64).contiguous() if self.entropy == "float64" else y)
        finally:
            witness.close()
        strings = [s[0] for s in out["strings"]]
        z_hw = tuple(int(v) for v in out["shape"]["hyper"])
        y_hw = tuple(int(v) for v in out["shape"]["y"][0][1:])
        return EncodedTile(strings=strings, z_hw=z_hw, y_hw=y_hw, witness=witness.crc, height=h, width=w)

    def decode_latent(
        self, strings: list[bytes], z_hw: tuple[int, int], y_hw: tuple[int, int], *, strict: bool = False,
    ) -> tuple[torch.Tensor, int]:
        """Entropy-decode one tile's latent: (y_hat (1, M, *y_hw) on the CPU, witness of the decoded symbols).

        y_hat is float64 in the float64 entropy mode, float32 otherwise; its values are the decoded integer
        symbols plus the predicted means, exactly what the tile-wise synthesis reads.
        """
        groups = self.codec.arch.groups
        shape = {"y": [torch.Size([g, *y_hw]) for g in groups], "hyper": torch.Size(z_hw)}
        if strict:
            model, threads = self._model("cpu", False), 1
        else:
            model, threads = self._model(), self.threads
        latent, entropy_dtype = self._entropy_path(model)
        witness = _SymbolWitness(None if self.entropy == "int" else latent, self.witness_kind)
        det_before = torch.are_deterministic_algorithms_enabled()
        try:
            if strict:
                torch.use_deterministic_algorithms(True, warn_only=True)
            with torch_threads(threads), torch.inference_mode():
                if self.entropy == "int":
                    dev = next(model.parameters()).device
                    y_hat = self._int_coder().decompress(strings, z_hw, dev, witness.update, witness.covers_z)
                    if tuple(y_hat.shape[-2:]) != tuple(y_hw):
                        raise DesyncError(f"latent {tuple(y_hat.shape[-2:])} from z {tuple(z_hw)}, record says "
                                          f"{tuple(y_hw)}")
                else:
                    with entropy_dtype:
                        y_hat = latent.decompress([[s] for s in strings], shape)["y_hat"]
                y_hat = y_hat.cpu()
        finally:
            witness.close()
            torch.use_deterministic_algorithms(det_before)
        return y_hat, witness.crc

    def synthesize(self, y_hat: torch.Tensor, *, strict: bool = False, mosaic: bool = False) -> torch.Tensor:
        """g_s over a latent (1, M, h, w) in this codec's synthesis mode: pixels (1, 3, 16h, 16w) in [0, 1],
        float, on the device g_s ran on (``strict``: the CPU model, one thread, deterministic algorithms).
        ``mosaic``: a crop of the latent mosaic (a synthesis window), run by the g_s fine-tuned for it when
        :attr:`mosaic_g_s` names one."""
        tuned = mosaic and self.mosaic_g_s is not None
        det_before = torch.are_deterministic_algorithms_enabled()
        try:
            if strict:
                torch.use_deterministic_algorithms(True, warn_only=True)
            with torch_threads(1 if strict else self.threads), torch.inference_mode():
                if self.synthesis == "float64":
                    return self._float64("g_s", tuned)(y_hat.to("cpu", torch.float64)).clamp_(0, 1)
                if strict:
                    g_s = self._mosaic_g_s() if tuned else self._model("cpu", False).g_s
                else:
                    g_s = self._synthesis(self._model(), tuned)
                dev = next(g_s.parameters()).device
                return g_s(y_hat.to(dev, torch.float32, non_blocking=True)).clamp_(0, 1)
        finally:
            torch.use_deterministic_algorithms(det_before)

    def decode(
        self, strings: list[bytes], z_hw: tuple[int, int], y_hw: tuple[int, int], height: int, width: int,
        *, strict: bool = False,
    ) -> tuple[np.ndarray, int]:
        """Decode one tile; returns ((height, width, 3) uint8, witness of the decoded symbols)."""
        y_hat, crc = self.decode_latent(strings, z_hw, y_hw, strict=strict)
        return to_uint8_hwc(self.synthesize(y_hat, strict=strict)[0, :, :height, :width]), crc

    def decode_latent_checked(
        self, strings: list[bytes], z_hw: tuple[int, int], y_hw: tuple[int, int], witness: int | None, *,
        what: str = "tile",
    ) -> tuple[torch.Tensor, bool]:
        """Entropy-decode and prove it: (y_hat, whether the strict retry was needed).

        The one place where a witness is checked: a mismatch is retried once in strict mode (the encoder's
        conditions); a second mismatch raises :class:`DesyncError`. ``witness`` None (an old record) decodes
        unchecked.
        """
        y_hat, got = self.decode_latent(strings, z_hw, y_hw)
        if witness is None or got == witness:
            return y_hat, False
        log.warning("%s: decoded symbols do not match the encoder's witness; retrying in strict mode", what)
        y_hat, got = self.decode_latent(strings, z_hw, y_hw, strict=True)
        if got != witness:
            raise DesyncError(f"{what}: entropy decoder desynchronised (symbol witness mismatch, also in strict "
                              "mode)")
        return y_hat, True

    def decode_checked(
        self, strings: list[bytes], z_hw: tuple[int, int], y_hw: tuple[int, int], height: int, width: int,
        witness: int | None, *, what: str = "tile",
    ) -> tuple[np.ndarray, bool]:
        """Decode and prove it (:meth:`decode_latent_checked`, then g_s): ((height, width, 3) uint8, retried)."""
        y_hat, retried = self.decode_latent_checked(strings, z_hw, y_hw, witness, what=what)
        return to_uint8_hwc(self.synthesize(y_hat, strict=retried)[0, :, :height, :width]), retried

    def roundtrip(self, rgb: np.ndarray, *, what: str = "image") -> tuple[np.ndarray, EncodedTile, bool]:
        """Encode then decode-and-check one image: (decoded (H, W, 3) uint8, the encoded tile, retried)."""
        enc = self.encode(rgb)
        decoded, retried = self.decode_checked(enc.strings, enc.z_hw, enc.y_hw, enc.height, enc.width, enc.witness,
                                               what=what)
        return decoded, enc, retried

    @property
    def n_strings(self) -> int:
        return 2 * len(self.codec.arch.groups) + 1


def to_uint8_hwc(x_hat: torch.Tensor) -> np.ndarray:
    """(3, h, w) float pixels in [0, 1] -> contiguous (h, w, 3) uint8 (rounded), on the CPU."""
    return np.ascontiguousarray(x_hat.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def _to_tensor(rgb: np.ndarray, device: str) -> torch.Tensor:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 tile, got {rgb.dtype} {rgb.shape}")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255).to(device)


def _pad_to(x: torch.Tensor, align: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % align, (-w) % align
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x
