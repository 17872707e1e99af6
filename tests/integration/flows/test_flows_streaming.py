"""A pass processed while it arrives (``NAME.part`` growing, then renamed) gives the product of the finished file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import make_pass

HW = (384, 640)  # 3 x 5 codec tiles of 128 px


def _arrays(product):
    from groundstation.product import open_product

    ds = open_product(product)
    return {k: ds[k].values for k in ("decoded", "enhanced", "valid")}


def _downlink(src: Path, inbox: Path, started: Path | None = None, **kw) -> tuple[threading.Thread, dict]:
    """The simulator in a thread; returns once the header is in the inbox. ``started``: a folder whose
    ``*/*.state`` appears when the run has begun: the writer holds the rest of the pass back until then, so the run
    certainly overlaps the downlink however slowly this machine starts it."""
    from groundstation.downlink import simulate_downlink

    out: dict = {}

    def gate(i, tile):
        deadline = time.time() + 120
        while i == 0 and started is not None and not any(started.glob("*/*.state")) and time.time() < deadline:
            time.sleep(0.05)

    def write():
        out["result"] = simulate_downlink(src, inbox, on_record=gate, **kw)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    part = inbox / (src.name + ".part")
    deadline = time.time() + 30
    while not (part.exists() and part.stat().st_size > 2048) and "result" not in out:
        assert time.time() < deadline, "the simulator wrote nothing"
        time.sleep(0.02)
    return t, out


@pytest.fixture(scope="module")
def stream_pass(tmp_path_factory, tiny_codec):
    return make_pass(tmp_path_factory.mktemp("stream"), tiny_codec, "stream-pass-1", height=HW[0], width=HW[1])[1]


@pytest.fixture(scope="module")
def opts(tiny_codec, enhancer_ckpts):
    from flows.options import ProcessOptions

    return ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]), tiles_per_batch=2, core_tiles=1,
                          temperature=1.0)


@pytest.fixture(scope="module")
def batch(tmp_path_factory, prefect_harness, dask_cluster, stream_pass, opts):
    """The product of the finished file, processed once for the module."""
    from flows.process_pass import run_process_pass

    return run_process_pass(stream_pass, tmp_path_factory.mktemp("batch"), opts,
                            dask_address=dask_cluster.scheduler_address)


@pytest.mark.slow
def test_a_pass_processed_while_it_arrives_is_the_product_of_the_finished_file(
        tmp_path, dask_cluster, stream_pass, opts, batch):
    from flows.process_pass import run_process_pass

    inbox = tmp_path / "inbox"
    writer, out = _downlink(stream_pass, inbox, started=tmp_path / "stream", duration_s=8.0)
    res = run_process_pass(inbox / (stream_pass.name + ".part"), tmp_path / "stream", opts,
                           dask_address=dask_cluster.scheduler_address)
    writer.join()
    assert res["status"] == "complete" and res["version"] == batch["version"] and res["tiles_lost"] == 0
    assert res["pass"] == str(inbox / stream_pass.name)  # the final name, not the .part
    a, b = _arrays(res["product"]), _arrays(batch["product"])
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    when = res["timeliness"]
    assert when["first_tile_decoded"] < when["last_byte"]  # it worked while the pass arrived
    assert 0 <= when["latency_s"] < res["timings"]["total_s"]
    first = batch["timeliness"]["first_tile_decoded"]  # noted for a complete file too
    assert first is not None and batch["timeliness"]["last_byte"] < first
    assert any("processed while arriving" in n for n in res["notes"])
    assert not Path(res["product"]).with_suffix(".state").exists()  # the hard link went with the state


@pytest.mark.slow
def test_a_downlink_cut_mid_record_ends_with_the_cut_tiles_lost_and_the_rest_intact(
        tmp_path, prefect_harness, dask_cluster, stream_pass, opts):
    from flows.process_pass import run_process_pass

    inbox = tmp_path / "inbox"
    writer, out = _downlink(stream_pass, inbox, duration_s=3.0, cut_after=9, drop=[2])
    res = run_process_pass(inbox / (stream_pass.name + ".part"), tmp_path / "stream", opts,
                           dask_address=dask_cluster.scheduler_address)
    writer.join()
    cut = out["result"].cut
    assert res["status"] == "complete" and res["exit_code"] == 3
    lost = {d["tile"]: d["reason"] for d in res["lost"]}
    assert lost[2] == "missing" and lost[cut] == "truncated" and set(lost) == {2} | set(range(cut, 15))
    # the same file processed afterwards: the same product, the same tiles lost
    again = run_process_pass(inbox / stream_pass.name, tmp_path / "batch", opts,
                             dask_address=dask_cluster.scheduler_address)
    assert [(d["tile"], d["reason"]) for d in again["lost"]] == [(d["tile"], d["reason"]) for d in res["lost"]]
    a, b = _arrays(res["product"]), _arrays(again["product"])
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.slow
def test_a_run_killed_mid_stream_resumes_without_redoing_finished_work(
        tmp_path, monkeypatch, dask_cluster, stream_pass, opts, batch):
    from flows.process_pass import run_process_pass
    from flows.scheduler import STOP_AFTER_ENV, RunInterrupted
    from tasks.state import read_markers

    inbox = tmp_path / "inbox"
    writer, _ = _downlink(stream_pass, inbox, duration_s=4.0)
    monkeypatch.setenv(STOP_AFTER_ENV, "2")
    with pytest.raises(RunInterrupted):
        run_process_pass(inbox / (stream_pass.name + ".part"), tmp_path / "out", opts,
                         dask_address=dask_cluster.scheduler_address)
    writer.join()
    state = next((tmp_path / "out").glob("*/*.state"))
    decoded_before = {t for m in read_markers(state, "decode").values() for t in m["tiles"]}
    assert decoded_before
    monkeypatch.delenv(STOP_AFTER_ENV)
    res = run_process_pass(inbox / stream_pass.name, tmp_path / "out", opts,
                           dask_address=dask_cluster.scheduler_address)
    assert res["status"] == "complete" and res["tiles_ok"] == 15 and res["batches"]["skipped"] >= 2
    a, b = _arrays(res["product"]), _arrays(batch["product"])
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.slow
def test_two_watchers_take_an_arriving_pass_once_and_make_the_product_of_the_file(
        tmp_path, dask_cluster, stream_pass, opts, batch):
    from flows.inbox import run_sweep

    inbox, products = tmp_path / "inbox", tmp_path / "products"
    inbox.mkdir()
    writer, _ = _downlink(stream_pass, inbox, duration_s=5.0)
    results, errors = [], []

    def watcher():
        try:
            while writer.is_alive() or (inbox / (stream_pass.name + ".part")).exists():
                results.extend(run_sweep(inbox, products, opts, dask_address=dask_cluster.scheduler_address,
                                         settle_s=0))
                time.sleep(0.2)
            results.extend(run_sweep(inbox, products, opts, dask_address=dask_cluster.scheduler_address, settle_s=0))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=watcher) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    writer.join()
    assert not errors
    runs = [r for r in results if not r["already_complete"]]
    assert [(r["pass"], r["status"]) for r in runs] == [(stream_pass.name, "done")]  # one run, by one watcher
    assert [p.name for p in (inbox / "done").iterdir()] == [stream_pass.name]
    assert not any((inbox / ".streams").iterdir())
    a, b = _arrays(runs[0]["product"]), _arrays(batch["product"])
    for k in a:
        assert np.array_equal(a[k], b[k]), k
