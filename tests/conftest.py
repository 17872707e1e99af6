from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from synth import tiny_codec_checkpoint  # tests/ is on the path (pytest.ini_options pythonpath)


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


# ---- Prefect/Dask fixtures ----
# Prefect reads its settings when first imported, so its home and server settings are set here, when pytest
# imports this conftest, before any test module imports prefect. Tests never talk to an operator's server.
import atexit as _atexit  # noqa: E402
import logging as _logging  # noqa: E402
import shutil as _shutil  # noqa: E402
import tempfile as _tempfile  # noqa: E402

_PREFECT_HOME = _tempfile.mkdtemp(prefix="gsp-test-prefect-home-")
_atexit.register(_shutil.rmtree, _PREFECT_HOME, True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILE", None)


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (SQLite in a temp dir) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def dask_cluster():
    """A real LocalCluster (2 worker processes x 1 thread) shared by the flow tests; a worker that dies fails
    its task at once (allowed-failures 0) so the crash test stays short."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=_logging.WARNING)
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def enhancer_ckpts(tmp_path_factory) -> tuple[Path, Path]:
    """Two different surrogate (random, non-identity, demo-size) enhancers saved as checkpoints."""
    from enhancer.checkpoint import save_enhancer
    from enhancer.testing import surrogate_enhancer

    d = tmp_path_factory.mktemp("enhancers")
    save_enhancer(surrogate_enhancer(seed=0), d / "enh-a.pt")
    save_enhancer(surrogate_enhancer(seed=1), d / "enh-b.pt")
    return d / "enh-a.pt", d / "enh-b.pt"


@pytest.fixture(scope="session")
def flow_pass(tmp_path_factory, tiny_codec) -> tuple[Path, Path]:
    """(scene, pass) encoded once for the flow tests."""
    from helpers import make_pass

    return make_pass(tmp_path_factory.mktemp("flowpass"), tiny_codec, "flow-pass-1")
