"""watch-inbox: passes are taken once, while they arrive or once complete, even with two watchers sweeping at once."""

from __future__ import annotations

import contextvars
import os
import shutil
import threading
import time

import pytest

from helpers import make_pass


def _truncate(src, dest, cut: int = 40):
    data = src.read_bytes()
    dest.write_bytes(data[:-cut])  # no end-of-pass trailer, last record cut


def test_ready_means_renamed_settled_and_trailer_present(tmp_path, flow_pass):
    from flows.events import clock_time
    from flows.inbox import find_ready

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(flow_pass[1], inbox / "a.gsp")
    shutil.copy(flow_pass[1], inbox / "b.gsp.part")  # still being written under its temporary name
    _truncate(flow_pass[1], inbox / "c.gsp")  # final name but no trailer: the downlink is still arriving
    (inbox / ".hidden").write_bytes(b"x")
    ready, waiting = find_ready(inbox, settle_s=0)
    assert [p.name for p in ready] == ["a.gsp"]
    # stopped short: until when it waits for the rest (the station's clock), and what it has
    until = (inbox / "c.gsp").stat().st_mtime + 3600
    assert waiting["c.gsp"].startswith(f"waiting for the rest of c.gsp until {clock_time(until)} (5 of 6 tiles, "
                                       "no end-of-pass trailer)"), waiting["c.gsp"]
    assert waiting["c.gsp"].until == until and waiting["c.gsp"].tiles == (5, 6)
    assert find_ready(inbox, settle_s=0, stale_after_s=None)[1]["c.gsp"].until is None
    ready, waiting = find_ready(inbox, settle_s=60)  # a.gsp changed just now: wait until it settles
    assert ready == [] and "still being written" in waiting["a.gsp"]
    old = time.time() - 7200
    os.utime(inbox / "c.gsp", (old, old))  # unchanged for two hours: processed, lost tiles reported
    ready, _ = find_ready(inbox, settle_s=0, stale_after_s=3600)
    assert {p.name for p in ready} == {"a.gsp", "c.gsp"}


@pytest.mark.slow
def test_two_watchers_process_each_pass_exactly_once(tmp_path, prefect_harness, dask_cluster, tiny_codec,
                                                     enhancer_ckpts, flow_pass):
    _two_watchers(tmp_path, dask_cluster, tiny_codec, enhancer_ckpts, flow_pass)


@pytest.mark.slow
@pytest.mark.server
def test_two_watchers_on_a_prefect_server_backed_by_postgresql(tmp_path, prefect_harness, dask_cluster, tiny_codec,
                                                                enhancer_ckpts, flow_pass):
    """The same against the production set-up (docs/operations.md): a ``prefect server`` on PostgreSQL (a
    throwaway cluster), two sweeps claiming at once through it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from servers import postgres_cluster, prefect_server

    with postgres_cluster() as database, prefect_server(tmp_path / "server-home", database) as api, \
            temporary_settings(updates={PREFECT_API_URL: api}):
        _two_watchers(tmp_path, dask_cluster, tiny_codec, enhancer_ckpts, flow_pass)
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:  # the runs are in PostgreSQL, not in the harness
            names = sorted(r.name.split(" @ ")[0] for r in client.read_flow_runs() if " @ " in r.name)
        assert names == ["flow-pass-1", "inbox-pass-1", "inbox-pass-2"], names


def _two_watchers(tmp_path, dask_cluster, tiny_codec, enhancer_ckpts, flow_pass):
    from flows.inbox import run_sweep
    from flows.process_pass import ProcessOptions
    from groundstation.product import status

    inbox, products = tmp_path / "inbox", tmp_path / "products"
    inbox.mkdir()
    for i in (1, 2):
        _, p = make_pass(tmp_path / "src", tiny_codec, f"inbox-pass-{i}", seed=i)
        shutil.copy(p, inbox / p.name)
    shutil.copy(flow_pass[1], inbox / "late.gsp.part")
    _truncate(flow_pass[1], inbox / "cut.gsp")
    opts = ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]), tiles_per_batch=3)

    results, errors = [], []
    barrier = threading.Barrier(2)

    def watcher():
        try:
            barrier.wait()
            results.append(run_sweep(inbox, products, opts, dask_address=dask_cluster.scheduler_address,
                                     settle_s=0))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    # each thread in a copy of this one's context: the Prefect settings in force here (the API) hold there too
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(watcher,)) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    assert not errors
    processed = [r["pass"] for sweep in results for r in sweep]
    # each once, by one watcher or the other; the arriving pass (its header is there) while it arrives
    assert sorted(processed) == ["inbox-pass-1.gsp", "inbox-pass-2.gsp", "late.gsp"]
    flat = [r for sweep in results for r in sweep]
    assert all(r["status"] == "done" and not r["already_complete"] and r["tiles_lost"] == 0 for r in flat)
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["inbox-pass-1.gsp", "inbox-pass-2.gsp"]
    assert all(status(r["product"]) == "complete" for r in flat)
    # left in place: the arriving pass until its writer renames it, and the one without trailer
    assert (inbox / "late.gsp.part").exists() and (inbox / "cut.gsp").exists()
    assert next(r for r in flat if r["pass"] == "late.gsp")["moved_to"] is None
    assert not any((inbox / "processing").iterdir())

    # the writer renames its .part: the next sweep moves it to done/ (its product is complete already)
    os.rename(inbox / "late.gsp.part", inbox / "late.gsp")
    again = run_sweep(inbox, products, opts, dask_address=dask_cluster.scheduler_address, settle_s=0)
    assert [(r["pass"], r["status"], r["already_complete"]) for r in again] == [("late.gsp", "done", True)]
    assert run_sweep(inbox, products, opts, dask_address=dask_cluster.scheduler_address, settle_s=0) == []


@pytest.mark.slow
def test_a_pass_that_cannot_be_processed_goes_to_failed_with_the_reason(tmp_path, prefect_harness, dask_cluster,
                                                                         flow_pass):
    from flows.inbox import run_sweep
    from flows.process_pass import ProcessOptions

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(flow_pass[1], inbox / "p.gsp")
    res = run_sweep(inbox, tmp_path / "products", ProcessOptions(enhance=False, codec=str(tmp_path / "nope.pt")),
                    dask_address=dask_cluster.scheduler_address, settle_s=0)
    assert [(r["pass"], r["status"]) for r in res] == [("p.gsp", "failed")]
    assert "checkpoint file not found" in (inbox / "failed" / "p.gsp.error.txt").read_text()


@pytest.mark.slow
def test_a_pass_claimed_for_its_own_run_is_processed_there_once_and_moved(tmp_path, prefect_harness, dask_cluster,
                                                                          tiny_codec, enhancer_ckpts, flow_pass):
    """What ``gsp serve`` does with a pass that lands: claim it, start a process-pass run for
    ``processing/NAME``. That run processes it under the pass's lock and moves it to done/; a second run for the
    same pass finds nothing to do; a bad pass goes to failed/ with its reason and its run fails in one line;
    a sweep meanwhile leaves a pass whose run is still to start alone. An arriving pass's run ends at its
    trailer; its writer's rename afterwards is seen by gsp serve's trigger, which moves it to done/ itself."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from flows.cluster import make_task_runner
    from flows.deployments import process_pass_job
    from flows.inbox import InboxTrigger, claim_new, dispatch_claimed, run_sweep
    from flows.process_pass import ProcessOptions
    from groundstation.errors import GSPError
    from groundstation.product import status

    inbox, products = tmp_path / "inbox", tmp_path / "products"
    inbox.mkdir()
    shutil.copy(flow_pass[1], inbox / "a.gsp")
    (inbox / "bad.gsp").write_bytes(b"GSP" + b"\0" * 200)  # no pass: refused by the parser
    old = time.time() - 7200
    os.utime(inbox / "bad.gsp", (old, old))  # unreadable for longer than stale_after_s: taken, to be refused
    _, streamed = make_pass(tmp_path / "src", tiny_codec, "stream-pass", seed=3)
    shutil.copy(streamed, inbox / "late.gsp.part")  # all of it, trailer included; the rename comes later
    opts = ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]), tiles_per_batch=3)
    job = process_pass_job.with_options(task_runner=make_task_runner(dask_cluster.scheduler_address))

    with get_client(sync_client=True) as client:
        def start(path):  # as gsp serve's _start_pass: a run still to start
            return str(client.create_flow_run(job, name=f"own run of {path.name}", state=Scheduled()).id)

        claimed, _ = claim_new(inbox, settle_s=0, on_claim=lambda p: dispatch_claimed(p, inbox, start))
    assert sorted(p.name for p in claimed) == ["a.gsp", "bad.gsp", "late.gsp.part"]
    assert run_sweep(inbox, products, opts, dask_address=dask_cluster.scheduler_address, settle_s=0) == []

    summary = job(str(inbox / "processing" / "a.gsp"), str(products), opts)
    assert summary["status"] == "done" and summary["tiles_lost"] == 0 and status(summary["product"]) == "complete"
    assert (inbox / "done" / "a.gsp").is_file() and not (inbox / ".locks" / "a.gsp.run").exists()
    assert job(str(inbox / "processing" / "a.gsp"), str(products), opts)["status"] == "nothing to do"

    with pytest.raises(GSPError, match=r"^bad.gsp could not be processed: .*; moved to .*failed$"):
        job(str(inbox / "processing" / "bad.gsp"), str(products), opts)
    assert (inbox / "failed" / "bad.gsp.error.txt").is_file() and not any((inbox / "processing").iterdir())

    summary = job(str(inbox / "late.gsp.part"), str(products), opts)  # ended by its trailer, not yet renamed
    assert summary["status"] == "done" and summary["moved_to"] is None and status(summary["product"]) == "complete"
    os.rename(inbox / "late.gsp.part", inbox / "late.gsp")
    started = []
    InboxTrigger(inbox, print, dispatch=started.append, products=products, options=opts)._finish_streams()
    assert (inbox / "done" / "late.gsp").is_file() and not (inbox / ".streams" / "late.gsp").exists()
    assert started == []


def test_a_file_that_is_no_pass_is_said_at_once_and_left_until_it_goes_to_failed(tmp_path):
    """Not left in silence for stale_after_s: the reason, and when it goes to failed/, is worth saying (the
    trigger starts a sweep for it, which logs it at WARNING and tells gsp serve's console)."""
    from flows.events import clock_time
    from flows.inbox import find_ready

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "junk.gsp").write_bytes(b"GSP not a pass")
    ready, waiting = find_ready(inbox, settle_s=0, stale_after_s=600)
    why = waiting["junk.gsp"]
    until = (inbox / "junk.gsp").stat().st_mtime + 600
    assert ready == [] and why.said and why.unreadable and why.tiles is None and why.until == until
    assert why.startswith("junk.gsp is not a readable pass (") and why.endswith(
        f"left alone until {clock_time(until)} in case it is still being written, then moved to failed/ with the "
        "reason"), why
    assert not find_ready(inbox, settle_s=60)[1]["junk.gsp"].said  # merely settling: nothing to say yet


def test_a_sweep_leaves_a_claimed_pass_to_its_own_run_only_while_that_run_is_still_to_start(tmp_path,
                                                                                          prefect_harness):
    """``.locks/NAME.run`` names the run gsp serve started for a pass: scheduled or (recently) pending, the
    sweep leaves the pass to it; running with the pass's lock free (its process died), ended, or unknown to the
    server (the record is dropped): the sweep takes the pass over."""
    from uuid import uuid4

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Completed, Pending, Running, Scheduled

    from flows.inbox import dispatched_run

    @flow(name="process-pass-probe")
    def probe() -> None:
        pass

    record = tmp_path / ".locks" / "p.gsp.run"
    record.parent.mkdir()
    assert dispatched_run(tmp_path, "p.gsp") is None  # no record
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(probe, name="p-run", state=Scheduled())
        record.write_text(f"{run.id}\n")
        assert dispatched_run(tmp_path, "p.gsp") == "'p-run' (Scheduled)"
        for state, left in ((Pending(), True), (Running(), False), (Completed(), False), (Cancelled(), False)):
            client.set_flow_run_state(run.id, state, force=True)
            assert bool(dispatched_run(tmp_path, "p.gsp")) is left, state
        record.write_text(f"{uuid4()}\n")  # another server's run
        assert dispatched_run(tmp_path, "p.gsp") is None and not record.exists()
