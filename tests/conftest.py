from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from synth import tiny_codec_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # ELIC runs steadier with one torch thread per process, and CI has 2 cores.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_codec(tmp_path_factory) -> Path:
    return tiny_codec_checkpoint(tmp_path_factory.mktemp("codec") / "tiny.pt")


@pytest.fixture(scope="session")
def other_codec(tmp_path_factory) -> Path:
    return tiny_codec_checkpoint(tmp_path_factory.mktemp("codec2") / "other.pt", seed=1)


def needs_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (development data is not part of the repository)")
    return path
