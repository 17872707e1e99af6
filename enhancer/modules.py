"""Building blocks of the INN-RSIC enhancer (Li & Hou, Remote Sensing 2025, sec. 3.1).

Every invertible piece has a ``forward`` (image -> latent direction, used in training) and an ``inverse``
(latent -> image direction, the only one used at inference), each with one return type. Attribute names
(``conv1.conv_weights``, ``haar_weights``, ``F``/``G``/``H``, ``h_mean_s``/``h_scale_s``, ``conv1..conv5``)
are those of the authors' checkpoints, listed in ``shared/reference/enhancer_state_dict.json``; do not rename
them without adding a key-renaming step to :mod:`enhancer.checkpoint`.

Numbered items ("REFERENCE 1".."7") refer to the list in ``docs/method.md``, section "Enhancer network".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "YUV_MATRIX",
    "ColourMatrix",
    "ChannelExpansion",
    "HaarDownsampling",
    "HaarUpsampling",
    "DenseBlock",
    "AffineCoupling",
    "ConditionalGaussian",
    "haar_kernels",
    "quantize",
]

# Analog YUV matrix, the initial value of both colour matrices (REFERENCE 1). Rows give Y, U, V from R, G, B.
YUV_MATRIX = (
    (0.299, 0.587, 0.114),
    (-0.147, -0.289, 0.436),
    (0.615, -0.515, -0.100),
)


class ColourMatrix(nn.Module):
    """A learnable 3x3 colour transform applied per pixel, no bias (the paper's 1x1 convolution Phi_i).

    ``out[c] = sum_j conv_weights[c, j] * x[j]``; the inverse uses the matrix inverse.
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        weights = torch.eye(channels)
        if channels == 3:
            weights = torch.tensor(YUV_MATRIX, dtype=torch.float32)
        self.conv_weights = nn.Parameter(weights)

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv_weights.shape[0]
        return F.conv2d(x, self.conv_weights.reshape(c, c, 1, 1))

    def inverse(self, y: Tensor) -> Tensor:
        c = self.conv_weights.shape[0]
        inv = torch.linalg.inv(self.conv_weights)
        return F.conv2d(y, inv.reshape(c, c, 1, 1))


class ChannelExpansion(nn.Module):
    """Channel expansion, module index 0 (paper eq. 4 and its inverse; REFERENCE 1).

    forward: ``[Phi_1(x/2), Phi_2(x - x/2)]`` -> 6 channels. inverse: ``Phi_1^-1(p_1) + Phi_2^-1(p_2)``.
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = ColourMatrix(channels)
        self.conv2 = ColourMatrix(channels)

    def forward(self, x: Tensor) -> Tensor:
        half = x / 2.0
        return torch.cat((self.conv1(half), self.conv2(x - half)), dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        c = self.channels
        return self.conv1.inverse(y[:, :c]) + self.conv2.inverse(y[:, c:])


def haar_kernels(channels: int) -> Tensor:
    """The fixed one-level Haar kernels, ``(4 * channels, 1, 2, 2)``, repeated per channel (REFERENCE 2).

    Per channel, in this order: LL ``[[1, 1], [1, 1]]``, ``[[1, -1], [1, -1]]``, ``[[1, 1], [-1, -1]]``,
    ``[[1, -1], [-1, 1]]``. Each kernel has squared norm 4, hence the division by 4 in the analysis.
    """
    k = torch.ones(4, 1, 2, 2)
    k[1, 0, 0, 1] = k[1, 0, 1, 1] = -1
    k[2, 0, 1, 0] = k[2, 0, 1, 1] = -1
    k[3, 0, 1, 0] = k[3, 0, 0, 1] = -1
    return torch.cat([k] * channels, dim=0)


def _haar_analysis(x: Tensor, kernels: Tensor, channels: int) -> Tensor:
    n, _, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"Haar analysis needs even height and width, got {h}x{w}; pad first "
                         "(enhancer.inference.pad_to_even)")
    out = F.conv2d(x, kernels, stride=2, groups=channels) / 4.0
    # conv2d gives channel-major (c0: LL, d1, d2, d3, c1: ...); make it sub-band-major (all LL first).
    out = out.reshape(n, channels, 4, h // 2, w // 2).transpose(1, 2)
    return out.reshape(n, channels * 4, h // 2, w // 2)


def _haar_synthesis(y: Tensor, kernels: Tensor, channels: int) -> Tensor:
    n, _, h, w = y.shape
    out = y.reshape(n, 4, channels, h, w).transpose(1, 2).reshape(n, channels * 4, h, w)
    # Orthogonal kernels of squared norm 4: the transposed conv undoes the /4 analysis without scaling.
    return F.conv_transpose2d(out, kernels, stride=2, groups=channels)


class HaarDownsampling(nn.Module):
    """Haar analysis H_D, module index 1: ``C x H x W -> 4C x H/2 x W/2``, sub-band-major (REFERENCE 2).

    The kernels are a frozen parameter (``requires_grad=False``) so that they are part of the state dict,
    exactly as in the authors' checkpoints.
    """

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.channels = channels
        self.haar_weights = nn.Parameter(haar_kernels(channels), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return _haar_analysis(x, self.haar_weights, self.channels)

    def inverse(self, y: Tensor) -> Tensor:
        return _haar_synthesis(y, self.haar_weights, self.channels)


class HaarUpsampling(nn.Module):
    """Haar synthesis H_U, module index 10 (after the last coupling): the mirror of :class:`HaarDownsampling`."""

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.channels = channels
        self.haar_weights = nn.Parameter(haar_kernels(channels), requires_grad=False)

    def forward(self, y: Tensor) -> Tensor:
        return _haar_synthesis(y, self.haar_weights, self.channels)

    def inverse(self, x: Tensor) -> Tensor:
        return _haar_analysis(x, self.haar_weights, self.channels)


class DenseBlock(nn.Module):
    """Five 3x3 convolutions with dense connectivity (REFERENCE 6; the paper's phi, rho, eta, psi_1, psi_2).

    Conv k sees the input and the outputs of convs 1..k-1; LeakyReLU(0.2) after convs 1-4, none after conv 5.
    Init: xavier-normal x0.1 for convs 1-4, zeros for conv 5 (weights and bias), so a new block outputs 0.
    """

    def __init__(self, in_channels: int, out_channels: int, growth: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, growth, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels + growth, growth, 3, 1, 1)
        self.conv3 = nn.Conv2d(in_channels + 2 * growth, growth, 3, 1, 1)
        self.conv4 = nn.Conv2d(in_channels + 3 * growth, growth, 3, 1, 1)
        self.conv5 = nn.Conv2d(in_channels + 4 * growth, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            nn.init.xavier_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv5.weight)
        nn.init.zeros_(self.conv5.bias)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))


class AffineCoupling(nn.Module):
    """Affine coupling ("invertible block", paper eq. 2 and 3; REFERENCE 3), modules 2..blocks+1.

    The input is split into ``x1`` (first ``split`` channels: the LL bands) and ``x2`` (the rest).
    forward:  y1 = x1 + F(x2);  s = 2*sigmoid(H(y1)) - 1;  y2 = x2 * exp(s) + G(y1)
    inverse:  s = 2*sigmoid(H(x1)) - 1;  y2 = (x2 - G(x1)) * exp(-s);  y1 = x1 - F(y2)
    """

    def __init__(self, channels: int = 24, split: int = 6, growth: int = 32, clamp: float = 1.0) -> None:
        super().__init__()
        self.split = split
        self.clamp = clamp
        self.F = DenseBlock(channels - split, split, growth)
        self.G = DenseBlock(split, channels - split, growth)
        self.H = DenseBlock(split, channels - split, growth)

    def _log_scale(self, x1: Tensor) -> Tensor:
        return self.clamp * (torch.sigmoid(self.H(x1)) * 2 - 1)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.F(x2)
        y2 = x2 * torch.exp(self._log_scale(y1)) + self.G(y1)
        return torch.cat((y1, y2), 1)

    def inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        x2 = (y2 - self.G(y1)) * torch.exp(-self._log_scale(y1))
        x1 = y1 - self.F(x2)
        return torch.cat((x1, x2), 1)


class ConditionalGaussian(nn.Module):
    """CGM, the conditional generation module (paper sec. 3.1.3, eq. 5; REFERENCE 5).

    ``m = psi_1(s)`` (``h_mean_s``), ``sigma = exp(2*sigmoid(psi_2(s)) - 1) + 1e-6`` (``h_scale_s``).
    forward: ``z = (z~ - m) / sigma``; inverse: ``z~ = m + z * sigma``. ``s`` passes through unchanged.
    """

    def __init__(self, channels: int = 3, latent_channels: int = 3, growth: int = 64,
                 clamp: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.h_mean_s = DenseBlock(channels, latent_channels, growth)
        self.h_scale_s = DenseBlock(channels, latent_channels, growth)
        self.clamp = clamp
        self.eps = eps

    def mean_and_scale(self, s: Tensor) -> tuple[Tensor, Tensor]:
        m = self.h_mean_s(s)
        sigma = torch.exp(self.clamp * (torch.sigmoid(self.h_scale_s(s)) * 2 - 1)) + self.eps
        return m, sigma

    def forward(self, s: Tensor, z_tilde: Tensor) -> Tensor:
        m, sigma = self.mean_and_scale(s)
        return (z_tilde - m) / sigma

    def inverse(self, s: Tensor, z: Tensor) -> Tensor:
        m, sigma = self.mean_and_scale(s)
        return m + z * sigma


class _StraightThroughQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ARG004 - ctx required by autograd
        return torch.round(torch.clamp(x, 0.0, 1.0) * 255.0) / 255.0

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # noqa: ARG004
        return grad_output


def quantize(x: Tensor) -> Tensor:
    """QM, the quantisation module (paper sec. 3.1.4; REFERENCE 7): clamp to [0, 1], round to 1/255.

    The gradient is passed through unchanged (straight-through, also across the clamp), as in the reference's
    ``Quant`` autograd function; the value is exactly ``round(clamp(x) * 255) / 255``. Used in training;
    inference rounds to uint8 itself.
    """
    return _StraightThroughQuant.apply(x)


# --- fast inference path (channels_last end to end, no layout flips) ------------------------------------
# The functions below compute exactly the same maps as the modules above (same weights, same math up to
# float32 rounding order); they exist because on CPU the thin convolutions of the enhancer are memory bound
# and the plain path spends as much time on layout changes (channel slices and sub-band transposes of
# channels_last tensors, torch.cat) as on arithmetic. Used by :meth:`enhancer.model.INNRSIC.inverse_fast`.

def dense_block_fast(block: DenseBlock, x: Tensor) -> Tensor:
    """:meth:`DenseBlock.forward` for a channels_last input, the LeakyReLUs in place."""
    slope = block.lrelu.negative_slope
    x1 = F.leaky_relu_(block.conv1(x), slope)
    x2 = F.leaky_relu_(block.conv2(torch.cat((x, x1), 1)), slope)
    x3 = F.leaky_relu_(block.conv3(torch.cat((x, x1, x2), 1)), slope)
    x4 = F.leaky_relu_(block.conv4(torch.cat((x, x1, x2, x3), 1)), slope)
    return block.conv5(torch.cat((x, x1, x2, x3, x4), 1))


def haar_analysis_bands(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four Haar sub-bands (LL, d1, d2, d3) of ``x`` (N, C, H, W), each (N, C, H/2, W/2).

    Equals :func:`_haar_analysis` (conv with :func:`haar_kernels`, /4) split into its four sub-band groups,
    computed from the four 2x2 phases with adds instead of a grouped strided convolution.
    """
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ab, cd = a + b, c + d
    amb, cmd = a - b, c - d
    return (ab + cd) * 0.25, (amb + cmd) * 0.25, (ab - cd) * 0.25, (amb - cmd) * 0.25


def haar_synthesis_bands(ll: Tensor, d1: Tensor, d2: Tensor, d3: Tensor) -> Tensor:
    """Inverse of :func:`haar_analysis_bands` (equals :func:`_haar_synthesis`), channels_last output."""
    n, c, h, w = ll.shape
    out = torch.empty((n, c, 2 * h, 2 * w), dtype=ll.dtype, device=ll.device, memory_format=torch.channels_last)
    s_ll_d2, s_d1_d3 = ll + d2, d1 + d3
    m_ll_d2, m_d1_d3 = ll - d2, d1 - d3
    torch.add(s_ll_d2, s_d1_d3, out=out[..., 0::2, 0::2])
    torch.sub(s_ll_d2, s_d1_d3, out=out[..., 0::2, 1::2])
    torch.add(m_ll_d2, m_d1_d3, out=out[..., 1::2, 0::2])
    torch.sub(m_ll_d2, m_d1_d3, out=out[..., 1::2, 1::2])
    return out


def coupling_inverse_fast(block: AffineCoupling, y1: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
    """:meth:`AffineCoupling.inverse` on the split halves (channels_last), returning the halves."""
    g = dense_block_fast(block.G, y1)
    h = dense_block_fast(block.H, y1)
    # exp(-clamp * (2 sigmoid(h) - 1)), computed in place on h's buffer
    scale = torch.sigmoid_(h).mul_(-2.0 * block.clamp).add_(block.clamp).exp_()
    x2 = torch.sub(y2, g, out=g).mul_(scale)
    x1 = y1 - dense_block_fast(block.F, x2)
    return x1, x2
