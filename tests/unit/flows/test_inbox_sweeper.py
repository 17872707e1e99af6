"""When each pass is its own process-pass run (gsp serve), one sweep at a time processes the inbox: a sweep started
while another processes only claims, and the processing sweep takes what was claimed meanwhile before it ends.
The deployment run itself is exercised end to end by tests/integration/flows/test_station_ui.py and
test_serve_console.py; here only the sweeps' hand-over is checked, with the run replaced by a function that
records which pass it got (and what the product would say)."""

from __future__ import annotations

import logging
import os

from helpers import make_pass


def test_a_pass_claimed_by_a_second_sweep_is_processed_by_the_sweep_that_holds_the_inbox(
        tmp_path, tiny_codec, monkeypatch):
    import flows.inbox as inbox_mod

    inbox, products = tmp_path / "inbox", tmp_path / "products"
    (inbox / "processing").mkdir(parents=True)
    products.mkdir()
    _, first = make_pass(tmp_path / "src", tiny_codec, "first", seed=1, height=128, width=128)
    _, second = make_pass(tmp_path / "src", tiny_codec, "second", seed=2, height=128, width=128)
    os.rename(first, inbox / "processing" / "first.gsp")  # claimed by a sweep before
    ran, second_sweep = [], []

    def run(deployment, path, products_, options):
        ran.append(path.name)
        if path.name == "first.gsp":  # meanwhile another file lands, and its sweep claims it
            os.rename(second, inbox / "second.gsp")
            second_sweep.append(inbox_mod.sweep_inbox(inbox, products, settle_s=0, stale_after_s=None))
        return {"status": "complete", "product": str(products / path.stem), "report": "r.md", "tiles_ok": 1,
                "tiles_total": 1, "tiles_lost": 0, "exit_code": 0}

    monkeypatch.setattr(inbox_mod, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(inbox_mod, "pass_deployment", lambda: "process-pass/test")
    monkeypatch.setattr(inbox_mod, "_run_pass_deployment", run)
    results = inbox_mod.sweep_inbox(inbox, products, settle_s=0, stale_after_s=None)

    assert second_sweep == [[]]  # it claimed the new pass and left the processing to the first sweep
    assert ran == ["first.gsp", "second.gsp"]  # each once, the second by the sweep that held the inbox
    assert [r["pass"] for r in results] == ["first.gsp", "second.gsp"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["first.gsp", "second.gsp"]
    assert not list((inbox / "processing").iterdir())


def test_a_sweep_runs_passes_as_deployment_runs_only_with_two_slots_and_no_cluster_given(monkeypatch):
    from prefect.runtime import deployment

    from flows.inbox import RUN_SLOTS_ENV, pass_deployment

    monkeypatch.setitem(deployment.FIELDS, "name", lambda: "st")
    monkeypatch.setitem(deployment.FIELDS, "parameters", lambda: {"dask_address": None})
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv(RUN_SLOTS_ENV, "2")
    assert pass_deployment() == "process-pass/st"
    monkeypatch.setenv(RUN_SLOTS_ENV, "1")  # the sweep would wait for a run that has no slot
    assert pass_deployment() is None
    monkeypatch.setenv(RUN_SLOTS_ENV, "2")
    monkeypatch.setitem(deployment.FIELDS, "parameters", lambda: {"dask_address": "tcp://10.0.0.5:8786"})
    assert pass_deployment() is None  # its passes run on the given cluster, as subflows
    monkeypatch.setitem(deployment.FIELDS, "parameters", lambda: {})
    monkeypatch.setitem(deployment.FIELDS, "name", lambda: None)  # not started by a deployment
    assert pass_deployment() is None
