"""Stand-in enhancers for tests and benchmarks when no trained checkpoint is at hand.

A randomly initialised INN-RSIC is invertible but its inverse does not behave like an enhancer: with the
YUV colour matrices, ``inverse(image, z)`` treats RGB as YUV and adds raw ``z``, so most outputs clip to 0
or 255. :func:`surrogate_enhancer` instead sets the colour matrices so that the inverse passes the image
through (Phi_1 = I) and adds the latent at a small gain (Phi_2 = I * ``latent_divisor``), and gives every
dense block random, non-zero weights: outputs stay mostly inside [0, 1] and change by a few DN, with
spatial coupling through every coupling block and the CGM - like a trained enhancer, for measuring tiling
seams and speed. It says nothing about image quality.
"""

from __future__ import annotations

import torch

from enhancer.checkpoint import random_state_dict
from enhancer.model import INNRSIC, EnhancerConfig

__all__ = ["surrogate_enhancer"]


def surrogate_enhancer(config: EnhancerConfig | None = None, *, seed: int = 0, weight_scale: float = 1.0,
                       last_scale: float = 0.1, latent_divisor: float = 40.0) -> INNRSIC:
    """An INN-RSIC with random non-identity dense blocks whose inverse is close to "image + small change".

    ``weight_scale`` multiplies xavier-normal weights of convs 1-4 and ``last_scale`` those of conv 5 (see
    :func:`random_state_dict`): a gain near 1 inside the blocks carries context across their full receptive
    field, a small last gain keeps each block's output small;
    ``latent_divisor`` k makes the latent enter the output as roughly ``z~ / k`` (k=40: about 6 DN per unit
    of z). Returns the model in eval mode on the CPU.
    """
    model = INNRSIC(config if config is not None else EnhancerConfig.demo())
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state = random_state_dict(shapes, seed=seed, scale=weight_scale, last_scale=last_scale)
    eye = torch.eye(3)
    state["operations_gaussian.0.conv1.conv_weights"] = eye.clone()
    state["operations_gaussian.0.conv2.conv_weights"] = eye * latent_divisor
    model.load_state_dict(state, strict=True)
    return model.eval()
