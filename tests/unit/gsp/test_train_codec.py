"""gsp train-codec: a short run writes its records; --init-from starts another lambda from a run's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from groundstation.errors import ConfigError
from gsp.training.codec import CodecTrainConfig, train_codec

from synth import TINY_ARCH, smooth_image


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-images")
    for i in range(3):
        rgb = (smooth_image(80, 96, seed=i).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(d / f"{i}.png")
    return d


def _cfg(image_dir, out, **kw) -> CodecTrainConfig:
    opts = dict(N=TINY_ARCH.N, M=TINY_ARCH.M, groups=list(TINY_ARCH.groups), steps=2, batch_size=2, crop=64,
                checkpoint_every=1, threads=1)
    opts.update(kw)
    return CodecTrainConfig(data=[str(image_dir)], out=str(out), **opts)


def _main_weights(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if not k.endswith("quantiles")}


def test_init_from_starts_from_the_other_runs_weights(image_dir, tmp_path):
    first = train_codec(_cfg(image_dir, tmp_path / "a", lmbda=0.0032), progress=False)
    assert (tmp_path / "a" / "loss.csv").read_text().count("\n") == 3  # header + 2 steps
    # lr ~0: after one step the new run still holds the first run's weights, not a fresh initialisation
    second = train_codec(_cfg(image_dir, tmp_path / "b", lmbda=0.013, steps=1, lr=1e-20, init_from=str(first)),
                         progress=False)
    fresh = train_codec(_cfg(image_dir, tmp_path / "c", lmbda=0.013, steps=1, lr=1e-20, seed=5), progress=False)
    a, b, c = _main_weights(first), _main_weights(second), _main_weights(fresh)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
    assert torch.load(second, weights_only=True)["step"] == 1  # a new run: its own step count


def test_init_from_refuses_foreign_or_mismatched_files(image_dir, tmp_path):
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(ConfigError, match="not a gsp codec training checkpoint"):
        train_codec(_cfg(image_dir, tmp_path / "x", init_from=str(junk)), progress=False)
    first = train_codec(_cfg(image_dir, tmp_path / "a", steps=1), progress=False)
    with pytest.raises(ConfigError, match="do not fit N=48"):
        train_codec(_cfg(image_dir, tmp_path / "y", N=48, init_from=str(first)), progress=False)
