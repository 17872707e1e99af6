"""Perceptual-metric backends beside :class:`~groundstation.metrics.perceptual.PerceptualMetric`'s own, for the
evaluation's perception-distortion sweep:

* :func:`stlpips_vgg`: ST-LPIPS with the shift-tolerant VGG16 trunk (weights ship in stlpips-pytorch), the
  sweep's column ``stlpips_vgg``;
* :func:`cached_reference`: a metric whose reference-side features are computed once per reference image, for
  comparing one original with many variants (same numbers as the model's forward, about half the cost).

Both reach into stlpips-pytorch's model (its trunk, scaling layer and linear heads): that knowledge stays here,
next to the metric it serves. torch and stlpips are imported only when a backend is built.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

__all__ = ["STLPIPS_VGG_MIN_SIZE", "cached_reference", "stlpips_vgg"]

#: The smallest side ST-LPIPS VGG accepts (smaller images get NaN).
STLPIPS_VGG_MIN_SIZE = 21


class _CachedReference:
    """Wraps an (ST-)LPIPS v0.1 non-spatial model so the reference side's features are computed once per
    reference batch: the same numbers as the model's forward, at about half the cost when one original is
    compared with many variants (the reference is the first argument of :meth:`PerceptualMetric.distance`)."""

    def __init__(self, model, normalize, spatial_average) -> None:
        self.model = model
        self._normalize = normalize
        self._spatial_average = spatial_average
        self._cache: dict[tuple, list] = {}

    def __call__(self, in0, in1):
        lp = self.model
        key = (tuple(in0.shape), hashlib.blake2b(in0.numpy().tobytes(), digest_size=16).digest())
        if key not in self._cache:
            if len(self._cache) >= 16:
                self._cache.clear()
            self._cache[key] = [self._normalize(o) for o in lp.net.forward(lp.scaling_layer(in0))]
        feats0 = self._cache[key]
        outs1 = lp.net.forward(lp.scaling_layer(in1))
        val = 0
        for kk in range(lp.L):
            diff = (feats0[kk] - self._normalize(outs1[kk])) ** 2
            val = val + self._spatial_average(lp.lins[kk](diff), keepdim=True)
        return val


def cached_reference(metric):
    """``metric`` with its reference features cached when it is ST-LPIPS (v0.1, linear layers, not spatial);
    any other model is returned unchanged."""
    try:
        from stlpips_pytorch import stlpips, utils
    except ImportError:  # pragma: no cover - stlpips-pytorch is a dependency
        return metric
    model = metric.model
    if (isinstance(model, stlpips.LPIPS) and model.version == "0.1" and model.lpips and not model.spatial
            and metric.device.type == "cpu"):
        metric.model = _CachedReference(model, utils.normalize_tensor, stlpips.spatial_average)
    return metric


def stlpips_vgg(device: str = "cpu"):
    """ST-LPIPS, VGG16 shift-tolerant variant (all weights ship in stlpips-pytorch), the evaluation's tiling;
    the column ``stlpips_vgg``."""
    from groundstation.metrics.perceptual import PerceptualMetric, _check_fully_loaded, _version

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from stlpips_pytorch import stlpips

        model = stlpips.LPIPS(net="vgg", variant="shift_tolerant", verbose=False)
    weights = Path(stlpips.__file__).parent / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"
    _check_fully_loaded(model, weights)
    metric = PerceptualMetric("stlpips_alex", "", model, min_size=STLPIPS_VGG_MIN_SIZE, device=device)
    # not one of PERCEPTUAL_COLUMNS (the pass tables' columns): a column of the evaluation's sweep only
    metric.name = "stlpips_vgg"
    metric.description = (f"ST-LPIPS, VGG16 shift-tolerant, weights {weights} (stlpips-pytorch "
                          f"{_version('stlpips-pytorch')}); tiles <= 256x256 px, area-weighted mean; lower is better")
    return metric
