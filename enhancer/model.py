"""The INN-RSIC enhancer network (Li & Hou, Remote Sensing 2025; ``docs/method.md``, "Enhancer network").

Layout of the module tree (it fixes the state-dict names of the authors' checkpoints)::

    operations_gaussian.0              ChannelExpansion      3 -> 6 channels            (eq. 4)
    operations_gaussian.1              HaarDownsampling      6 -> 24 channels, H/2 x W/2
    operations_gaussian.2..blocks+1    AffineCoupling        24 channels, split 6 / 18  (eq. 2, 3)
    operations_gaussian.blocks+2       HaarUpsampling        24 -> 6 channels, H x W
    guassianize                        ConditionalGaussian   (CGM, eq. 5; "guassianize" sic, as in the checkpoints)

``forward`` maps an image x to ``[s, z]`` (synthetic image, standardised latent); ``inverse`` maps a decoded
image and a latent ``z`` back to an image. Inference uses only ``inverse``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from enhancer.modules import (
    AffineCoupling,
    ChannelExpansion,
    ConditionalGaussian,
    HaarDownsampling,
    HaarUpsampling,
    coupling_inverse_fast,
    dense_block_fast,
    haar_analysis_bands,
    haar_synthesis_bands,
)

__all__ = ["EnhancerConfig", "INNRSIC"]

IMAGE_CHANNELS = 3
EXPANDED_CHANNELS = 2 * IMAGE_CHANNELS  # channel expansion doubles 3 -> 6 ("Gau_channel_scale=1")
WAVELET_CHANNELS = 4 * EXPANDED_CHANNELS  # 24 after one Haar level
SPLIT_CHANNELS = EXPANDED_CHANNELS  # the coupling's x1: the 6 LL bands


@dataclass(frozen=True)
class EnhancerConfig:
    """Architecture parameters of one enhancer. ``reference()`` is the authors' "S1" configuration."""

    blocks: int = 8
    coupling_growth: int = 32
    cgm_growth: int = 64

    def __post_init__(self) -> None:
        for name in ("blocks", "coupling_growth", "cgm_growth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EnhancerConfig.{name} must be a positive int, got {value!r}")

    @classmethod
    def reference(cls) -> EnhancerConfig:
        """The published configuration: 8 couplings, growth 32 (couplings) and 64 (CGM); 2,488,298 values."""
        return cls(blocks=8, coupling_growth=32, cgm_growth=64)

    @classmethod
    def demo(cls) -> EnhancerConfig:
        """A small configuration for tests and demos (about 1/10 of the reference's cost per pixel)."""
        return cls(blocks=3, coupling_growth=16, cgm_growth=16)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that can influence one output pixel of :meth:`INNRSIC.inverse`.

        CGM dense blocks: 5 convs 3x3 at full resolution (5 px). Each coupling: H and G (5 convs) then F on
        their result (5 more) at half resolution: 10 half-res px = 20 px. Plus 2 px for the Haar 2x2 grid.
        The practical influence of far pixels is usually much smaller (measured in benchmarks/enhancer_tiling).
        """
        return 5 + 20 * self.blocks + 2


class INNRSIC(nn.Module):
    """The invertible enhancer. Inputs are RGB in [0, 1], NCHW, with even H and W (pad odd sizes first)."""

    def __init__(self, config: EnhancerConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else EnhancerConfig.reference()
        ops: list[nn.Module] = [ChannelExpansion(IMAGE_CHANNELS), HaarDownsampling(EXPANDED_CHANNELS)]
        ops += [
            AffineCoupling(WAVELET_CHANNELS, SPLIT_CHANNELS, self.config.coupling_growth)
            for _ in range(self.config.blocks)
        ]
        ops.append(HaarUpsampling(EXPANDED_CHANNELS))
        self.operations_gaussian = nn.ModuleList(ops)
        # "guassianize" (sic): the name in the authors' code and checkpoints.
        self.guassianize = ConditionalGaussian(IMAGE_CHANNELS, EXPANDED_CHANNELS - IMAGE_CHANNELS,
                                               self.config.cgm_growth)

    @torch.no_grad()
    def init_identity(self, latent_gain: float = 40.0) -> INNRSIC:
        """Start training from "enhanced = decoded" instead of the reference's initial state (returns self).

        With the reference initialisation (both colour matrices = the YUV matrix, a CGM that outputs m = 0,
        sigma = 1) the untrained inverse maps a decoded image y to ``YUV^-1(y) + YUV^-1(z)``: wrong colours,
        clipped, about 7 dB PSNR. The network must first learn to pass the image through, which takes far
        more than a CPU run's budget (the reference trains 500k steps). This start sets

        * Phi_1 = 2 I, so the synthetic image is ``s = Phi_1(x / 2) = x``;
        * Phi_2 = ``latent_gain`` I, so ``z~ = latent_gain * x / 2``;
        * the CGM mean's last conv to ``m(s) = latent_gain * s / 2`` (a centre tap on its input channels)
          and its scale block's last conv to 0 (sigma = 1),

        so that forward gives ``s = x, z = 0`` and the inverse gives ``y + sigma * z / latent_gain``: exactly the
        decoded image at temperature 0. The couplings already start as identities (zero last convs). The gain
        sets how much one unit of z moves a pixel: about 2 / rms(x - x_decoded) makes z unit-variance for a
        codec residual of that size (40: a residual of ~0.05, about 26 dB). Only the initial values change: the
        architecture and the checkpoint format are the authors'.
        """
        if latent_gain <= 0:
            raise ValueError(f"latent_gain must be > 0, got {latent_gain}")
        expansion = self.operations_gaussian[0]
        eye = torch.eye(IMAGE_CHANNELS)
        expansion.conv1.conv_weights.copy_(2.0 * eye)
        expansion.conv2.conv_weights.copy_(latent_gain * eye)
        mean_last = self.guassianize.h_mean_s.conv5
        mean_last.weight.zero_()
        mean_last.bias.zero_()
        for c in range(IMAGE_CHANNELS):  # conv5 sees cat(s, x1..x4): s is its first input channels
            mean_last.weight[c, c, 1, 1] = latent_gain / 2.0
        scale_last = self.guassianize.h_scale_s.conv5
        scale_last.weight.zero_()
        scale_last.bias.zero_()
        return self

    @staticmethod
    def _check_even(x: Tensor, what: str) -> None:
        if x.dim() != 4:
            raise ValueError(f"{what} must be NCHW, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"{what} has odd size {h}x{w}; INN-RSIC needs even H and W: pad with "
                             "enhancer.inference.pad_to_even and crop afterwards")

    def forward(self, x: Tensor) -> Tensor:
        """Image ``(N, 3, H, W)`` -> ``(N, 6, H, W)``: channels 0-2 the synthetic image s, 3-5 the latent z.

        z = (z~ - m(s)) / sigma(s) is the CGM output (eq. 5), trained towards N(0, I).
        """
        self._check_even(x, "input image")
        if x.shape[1] != IMAGE_CHANNELS:
            raise ValueError(f"input image must have {IMAGE_CHANNELS} channels, got {x.shape[1]}")
        out = x
        for op in self.operations_gaussian:
            out = op(out)
        s, z_tilde = out[:, :IMAGE_CHANNELS], out[:, IMAGE_CHANNELS:]
        return torch.cat((s, self.guassianize(s, z_tilde)), dim=1)

    def inverse(self, image: Tensor, z: Tensor) -> Tensor:
        """Decoded image ``(N, 3, H, W)`` and latent ``z`` ``(N, 3, H, W)`` -> enhanced image ``(N, 3, H, W)``.

        Not clamped: the caller clamps to [0, 1] (and rounds) as the product requires.
        """
        self._check_inverse_inputs(image, z)
        out = torch.cat((image, self.guassianize.inverse(image, z)), dim=1)  # CGM inverse: z~ = m + z * sigma
        for op in reversed(self.operations_gaussian):
            out = op.inverse(out)
        return out

    def _check_inverse_inputs(self, image: Tensor, z: Tensor) -> None:
        self._check_even(image, "image")
        if image.shape[1] != IMAGE_CHANNELS or z.shape != image.shape:
            raise ValueError(f"inverse needs image and z of equal shape (N, 3, H, W), got "
                             f"{tuple(image.shape)} and {tuple(z.shape)}")

    def inverse_fast(self, image: Tensor, z: Tensor) -> Tensor:
        """:meth:`inverse` computed for inference speed: same weights and maps, float32 rounding aside.

        Everything runs channels_last (the layout in which the CPU convolutions are fastest) without layout
        flips: the coupling halves are kept apart instead of concatenated and sliced, the Haar transforms
        are adds on the 2x2 phases instead of grouped strided convolutions plus sub-band transposes, and the
        final colour matrices are applied to the four half-resolution sub-bands (they commute with the Haar
        synthesis) as one matrix product. Returns a channels_last ``(N, 3, H, W)`` tensor. Not for training
        (in-place activations); use under ``torch.inference_mode`` / ``no_grad``.
        """
        self._check_inverse_inputs(image, z)
        c = IMAGE_CHANNELS
        image = image.contiguous(memory_format=torch.channels_last)
        z = z.contiguous(memory_format=torch.channels_last)
        cgm = self.guassianize
        m = dense_block_fast(cgm.h_mean_s, image)
        sigma = torch.sigmoid_(dense_block_fast(cgm.h_scale_s, image)).mul_(2.0 * cgm.clamp).sub_(cgm.clamp)
        sigma = sigma.exp_().add_(cgm.eps)
        z_tilde = m.addcmul_(z, sigma)
        ll, d1, d2, d3 = haar_analysis_bands(torch.cat((image, z_tilde), 1))  # HaarUpsampling.inverse
        y1, y2 = ll, torch.cat((d1, d2, d3), 1)
        for op in reversed(self.operations_gaussian[2:-1]):
            y1, y2 = coupling_inverse_fast(op, y1, y2)
        # ChannelExpansion.inverse (Phi_1^-1 on channels 0-2 + Phi_2^-1 on 3-5) on each sub-band, then the
        # Haar synthesis (HaarDownsampling.inverse) of the 3-channel bands.
        expansion = self.operations_gaussian[0]
        mix = torch.cat((torch.linalg.inv(expansion.conv1.conv_weights),
                         torch.linalg.inv(expansion.conv2.conv_weights)), 1).t().to(y1.dtype)  # (6, 3)
        n, _, h, w = y1.shape
        ll = (y1.permute(0, 2, 3, 1).reshape(-1, 2 * c) @ mix).reshape(n, h, w, c).permute(0, 3, 1, 2)
        details = y2.permute(0, 2, 3, 1).reshape(-1, 3, 2 * c) @ mix  # (N*h*w, 3 bands, 3 channels)
        details = details.reshape(n, h, w, 3 * c).permute(0, 3, 1, 2)
        return haar_synthesis_bands(ll, details[:, :c], details[:, c:2 * c], details[:, 2 * c:])
