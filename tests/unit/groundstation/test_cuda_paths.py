"""The GPU paths: the decoder's synthesis and the enhancer's batched windows on CUDA, with the CPU
entropy coder and the symbol witness as the safety net. Skipped without a CUDA device; benchmarks/gpu_check.sh
runs them (and the throughput benchmarks) on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("golden", ["float32", "int"])
def test_golden_pass_with_synthesis_on_the_gpu_keeps_its_symbols_and_pixels(golden):
    """Entropy decoding stays on the CPU (witnesses exact); g_s on the GPU stays within the golden tolerance."""
    from golden.make_golden import compare, decode_symbols

    witnesses, decoded = decode_symbols(synthesis_device="cuda", golden=golden)
    assert compare(witnesses, decoded, golden=golden) == []


@pytest.mark.cuda
@cuda
def test_batched_windows_on_the_gpu_match_the_cpu():
    from enhancer.inference import enhance_mosaic
    from enhancer.model import EnhancerConfig
    from enhancer.testing import surrogate_enhancer

    rng = np.random.default_rng(3)
    mosaic = rng.integers(0, 256, (3, 700, 900), dtype=np.uint8)
    outs = {}
    for dev in ("cpu", "cuda"):
        model = surrogate_enhancer(EnhancerConfig.demo(), seed=0)
        out = np.zeros_like(mosaic)

        def sink(y0, y1, x0, x1, block, out=out):
            out[:, y0:y1, x0:x1] = block

        enhance_mosaic(model, lambda y0, y1, x0, x1: mosaic[:, y0:y1, x0:x1], sink, (700, 900), core=256,
                       halo=32, seed=1, temperature=0.5, batch_size=4, device=dev)
        outs[dev] = out
    diff = np.abs(outs["cpu"].astype(int) - outs["cuda"])
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3


def test_synthesis_device_of_the_entropy_path_is_the_cpu_and_pixels_are_unchanged():
    """On the CPU (runs everywhere): naming the CPU as the synthesis device decodes exactly as before, and the
    codec's entropy path never moves (only g_s would)."""
    from golden.make_golden import decode_symbols

    w0, d0 = decode_symbols()
    w1, d1 = decode_symbols(synthesis_device="cpu")
    assert w0 == w1 and np.array_equal(d0, d1)
