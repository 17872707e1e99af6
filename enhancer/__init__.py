"""INN-RSIC invertible enhancer (Li & Hou, Remote Sensing 2025): network, checkpoints, tiled inference.

See docs/method.md ("Enhancer network") for the architecture this package reproduces.
"""

from enhancer.checkpoint import load_enhancer, random_state_dict, save_enhancer
from enhancer.inference import crop_to, enhance_array, enhance_mosaic, pad_to_even
from enhancer.model import INNRSIC, EnhancerConfig
from enhancer.modules import quantize
from enhancer.noise import z_field
from enhancer.tiling import Box, Window, plan_windows

__all__ = [
    "INNRSIC",
    "Box",
    "EnhancerConfig",
    "Window",
    "crop_to",
    "enhance_array",
    "enhance_mosaic",
    "load_enhancer",
    "pad_to_even",
    "plan_windows",
    "quantize",
    "random_state_dict",
    "save_enhancer",
    "z_field",
]
