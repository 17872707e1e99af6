"""Who may do what: the path parameters of every deployment-run flow are held to the station's roots when a
deployment started the run (or the station says `enforce: always`), before anything is read or written; a local
operator's commands keep taking any path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from groundstation.roots import PathNotAllowed
from helpers import make_pass


def _station(tmp_path, enforce: str = "always") -> Path:
    home = tmp_path / "station"
    for name in ("inbox", "archive", "products", "runs", "weights"):
        (home / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "outside").mkdir(exist_ok=True)
    path = tmp_path / "station.yaml"
    path.write_text(f"station: test-station\nroots:\n  home: {home}\n  enforce: {enforce}\n")
    return home


@pytest.fixture
def station(tmp_path, monkeypatch):
    home = _station(tmp_path)
    monkeypatch.setenv("GSP_STATION", str(tmp_path / "station.yaml"))
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    return home


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under root with its bytes (symlinks by target): to show that nothing changed."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else
                                       str(p.readlink()) if p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


def test_enforced_for_runs_from_a_deployment_and_when_the_station_says_always(tmp_path, monkeypatch):
    from flows.access import checked, from_deployment
    from flows.options import ProcessOptions

    _station(tmp_path, enforce="deployments")
    monkeypatch.setenv("GSP_STATION", str(tmp_path / "station.yaml"))
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    assert not from_deployment()
    assert checked("pass_path", "/etc/passwd", "pass") == "/etc/passwd"  # a local operator's command
    assert ProcessOptions(reference="/etc/passwd").reference == "/etc/passwd"
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000000")  # as runners/workers set it
    assert from_deployment()
    with pytest.raises(PathNotAllowed, match="reference /etc/passwd is outside the station's roots"):
        ProcessOptions(reference="/etc/passwd")
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID")
    (tmp_path / "station.yaml").write_text((tmp_path / "station.yaml").read_text().replace("deployments", "always"))
    with pytest.raises(PathNotAllowed):
        checked("pass_path", "/etc/passwd", "pass")


def test_model_options_as_files_must_lie_under_weights_or_runs(station, tmp_path):
    from flows.options import ProcessOptions

    assert ProcessOptions(enhancer="demo-inn-l0032-v3").enhancer == "demo-inn-l0032-v3"  # a registry name
    ok = ProcessOptions(codec=str(station / "weights" / "c.pt"), enhancer=str(station / "runs" / "e" / "last.pt"))
    assert ok.codec.endswith("weights/c.pt") and ok.enhancer.endswith("runs/e/last.pt")
    for field, value in (("enhancer", str(tmp_path / "outside" / "e.pt")), ("codec", "../../weights/c.pt"),
                         ("enhancer", str(station / "inbox" / "e.pt"))):
        with pytest.raises(PathNotAllowed, match=f"{field} .*(weights|relative)"):
            ProcessOptions(**{field: value})


def test_every_deployment_flow_refuses_outside_paths_before_the_run(station, tmp_path):
    """What Prefect calls before a run starts (validate_parameters): a refused path fails the run there."""
    from flows.deployments import apply_supplement_job, process_pass_job
    from flows.inbox import watch_inbox
    from flows.reprocess import reprocess_archive

    outside = str(tmp_path / "outside")
    inside = {"pass_path": str(station / "inbox" / "p.gsp"), "out_dir": str(station / "products")}
    assert process_pass_job.validate_parameters(inside)["pass_path"] == str((station / "inbox" / "p.gsp").resolve())
    cases = [
        (process_pass_job, {**inside, "pass_path": f"{outside}/p.gsp"}, "pass_path"),
        (process_pass_job, {**inside, "pass_path": f"{station}/inbox/../../outside/p.gsp"}, "pass_path"),
        (process_pass_job, {**inside, "out_dir": outside}, "out_dir"),
        (process_pass_job, {**inside, "out_dir": str(station / "archive")}, "out_dir"),  # products go to products
        (process_pass_job, {**inside, "options": {"reference": f"{outside}/scene.tif"}}, "reference"),
        (reprocess_archive, {"archive": outside}, "archive"),
        (reprocess_archive, {"archive": str(station / "archive"), "products": "/tmp"}, "products"),
        (watch_inbox, {"inbox": outside, "products": str(station / "products")}, "inbox"),
        (watch_inbox, {"inbox": str(station / "inbox"), "products": f"{outside}/p"}, "products"),
        (apply_supplement_job, {"supplement_path": f"{outside}/s.gsp"}, "supplement_path"),
        (apply_supplement_job, {"supplement_path": str(station / "inbox" / "s.gsp"), "products": outside}, "products"),
    ]
    for flow, params, name in cases:
        with pytest.raises(PathNotAllowed, match=name):
            flow.validate_parameters(params)


def test_an_archive_symlink_out_of_the_roots_refuses_the_selection_unread(station, tmp_path, tiny_codec,
                                                                          monkeypatch):
    import flows.reprocess as reprocess

    _, p = make_pass(tmp_path / "outside", tiny_codec, "secret-pass", height=64, width=64)
    _, q = make_pass(station / "archive" / "day1", tiny_codec, "ok-pass", height=64, width=64)
    (station / "archive" / "day1" / "link.gsp").symlink_to(p)
    before = _tree(tmp_path)

    def no_reading(*a, **k):
        raise AssertionError("a pass was read before the selection was checked")

    monkeypatch.setattr(reprocess, "pass_header", no_reading)
    with pytest.raises(PathNotAllowed, match=r"1 files selected .* nothing was read.*link\.gsp"):
        reprocess.select_passes(station / "archive", "**/*.gsp")
    with pytest.raises(PathNotAllowed):
        reprocess.select_passes(station / "archive", "../../outside/*.gsp")  # a `..` in the glob
    assert _tree(tmp_path) == before
    monkeypatch.undo()
    (station / "archive" / "day1" / "link.gsp").unlink()
    monkeypatch.setenv("GSP_STATION", str(tmp_path / "station.yaml"))
    sel, _ = reprocess.select_passes(station / "archive", "**/*.gsp")
    assert [h.pass_id for _, h in sel] == ["ok-pass"]


@pytest.mark.slow
def test_refused_runs_change_nothing(station, tmp_path, tiny_codec, prefect_harness):
    """Whole runs: process-pass with a pass outside the roots fails before reading it; the inbox watcher moves a
    symlink out of the inbox to failed/ unread and processes nothing; nothing outside the roots changes."""
    from flows.deployments import process_pass_job
    from flows.inbox import watch_inbox

    _, secret = make_pass(tmp_path / "outside", tiny_codec, "secret-pass", height=64, width=64)
    shutil.copy(secret, station / "archive" / "copy.gsp")
    before = _tree(tmp_path / "outside")
    products_before = _tree(station / "products")
    state = process_pass_job(str(secret), str(station / "products"), return_state=True)
    assert state.is_failed() and state.message.startswith("refused: pass_path ")  # one line, no traceback
    state = process_pass_job(str(station / "archive" / "copy.gsp"), str(tmp_path / "outside" / "products"),
                             return_state=True)
    assert state.is_failed() and state.message.startswith("refused: out_dir ")
    (station / "inbox" / "link.gsp").symlink_to(secret)
    results = watch_inbox(str(station / "inbox"), str(station / "products"), settle_s=0)
    assert results == []
    assert (station / "inbox" / "failed" / "link.gsp").is_symlink()
    assert "outside the station's roots" in (station / "inbox" / "failed" / "link.gsp.error.txt").read_text()
    assert _tree(tmp_path / "outside") == before and _tree(station / "products") == products_before


def test_a_product_of_another_pass_with_the_same_id_is_never_overwritten(tmp_path, tiny_codec):
    """process-pass refuses (before writing) when the product folder holds another pass's product of that id."""
    from flows.identity import product_paths
    from flows.process_pass import _existing
    from groundstation.container import PassReader
    from groundstation.errors import ProductError
    from groundstation.product import create_product

    _, a = make_pass(tmp_path / "a", tiny_codec, "same-id", height=64, width=64)
    _, b = make_pass(tmp_path / "b", tiny_codec, "same-id", height=64, width=64, seed=1)
    ha, hb = PassReader(a).header, PassReader(b).header
    assert ha.pass_uid != hb.pass_uid
    paths = product_paths(tmp_path / "products", "same-id", "v1")
    paths.folder.mkdir(parents=True)
    create_product(paths.product, ha, attrs={"gsp_run": {"pass_uid": ha.pass_uid, "version": "v1"}})
    before = _tree(paths.folder)
    assert _existing(paths, ha) is None  # its own incomplete product: resumed
    with pytest.raises(ProductError, match="belongs to another pass"):
        _existing(paths, hb)
    assert _tree(paths.folder) == before


def test_a_refused_parameter_is_one_line_naming_it(tmp_path, monkeypatch):
    """What a refused deployment run says (its log line and state message): the parameter and the rule."""
    from flows.access import _validate, refusal
    from flows.deployments import process_pass_job

    home = tmp_path / "home"
    (tmp_path / "station.yaml").write_text(f"station: x\nroots:\n  home: {home}\n  enforce: always\n")
    monkeypatch.setenv("GSP_STATION", str(tmp_path / "station.yaml"))
    inside = str(home / "inbox" / "a.gsp")
    cases = [({"pass_path": "/etc/passwd"}, "pass_path /etc/passwd is outside the station's roots"),
             ({"pass_path": inside, "options": {"halo": "x"}}, "parameter options.halo: Input should be a valid "
                                                                "integer"),
             ({"pass_path": inside, "options": {"bogus": 1}}, "parameter options.bogus: Extra inputs are not "
                                                              "permitted"),
             ({}, "parameter pass_path: Field required")]
    for params, start in cases:
        with pytest.raises(Exception) as exc:
            _validate(process_pass_job.fn, params)
        line = refusal(exc.value)
        assert line.startswith(start) and "\n" not in line, line
    assert _validate(process_pass_job.fn, {"pass_path": inside, "options": {"halo": 4}})["options"].halo == 4


def _run_record(state):
    """(the run's name, its ERROR lines, all its log lines) on the API, once its final line is there."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        for _ in range(100):
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any(log.message.startswith("Finished in state") for log in logs):
                break
            time.sleep(0.2)
        return (client.read_flow_run(run_id).name, [log.message for log in logs if log.level >= 40],
                [log.message for log in logs])


@pytest.mark.slow
def test_every_deployment_refuses_bad_parameters_in_one_line_under_a_named_run(station, tmp_path, prefect_harness):
    """Each of the eight deployments' flows, given a parameter that breaks a rule: the run fails before it
    does anything, with one line (its state message and its one error log line, no traceback) that names the
    parameter and the rule, under a run name that says ``refused`` and names what it was given."""
    from flows.deployments import apply_supplement_job, process_pass_job
    from flows.inbox import watch_inbox
    from flows.reprocess import reprocess_archive
    from gsp.jobs import evaluate_job, export_job, train_codec_job, train_enhancer_job

    outside = tmp_path / "outside"
    before = _tree(tmp_path)
    cases = [
        (process_pass_job, {"pass_path": f"{outside}/p.gsp"}, "refused: p.gsp",
         "refused: pass_path "),
        (apply_supplement_job, {"supplement_path": f"{outside}/s.gsp"}, "refused: s.gsp",
         "refused: supplement_path "),
        (reprocess_archive, {"archive": str(outside)}, "refused: reprocess outside", "refused: archive "),
        (reprocess_archive, {"since": "2024-13-45"}, "refused: reprocess archive 2024-13-45..",
         "refused: since '2024-13-45': give a date as YYYY-MM-DD"),
        (watch_inbox, {"inbox": str(outside)}, "refused: sweep outside", "refused: inbox "),
        (watch_inbox, {"settle_s": -1}, "refused: sweep inbox",
         "refused: parameter settle_s: Input should be greater than or equal to 0"),
        (train_codec_job, {"data": [str(outside)]}, "refused: outside -> (runs)/train-codec", "refused: data "),
        (train_enhancer_job, {"pairs": str(station / "runs" / "pairs"), "out": str(outside / "run")},
         "refused: pairs -> run", "refused: out "),
        (evaluate_job, {"images": str(station / "archive"), "workers": 0}, "refused: archive -> (runs)/evaluate",
         "refused: parameter workers: Input should be greater than or equal to 1"),
        (evaluate_job, {"images": str(station / "archive"), "enhancer": f"{outside}/e.pt"},
         "refused: archive -> (runs)/evaluate", "refused: enhancer "),
        (export_job, {"product": f"{outside}/p/v.zarr"}, "refused: export p/v.zarr", "refused: product "),
    ]
    for job, params, name, message in cases:
        state = job(**params, return_state=True)
        assert state.is_failed() and state.message.startswith(message) and "\n" not in state.message, \
            (job.name, state.message)
        run_name, errors, lines = _run_record(state)
        assert run_name == name, (job.name, run_name)
        assert errors == [state.message], (job.name, errors)  # the one line
        assert not any("Traceback" in line for line in lines), (job.name, lines)
    assert _tree(tmp_path) == before  # nothing read or written


@pytest.mark.slow
def test_an_error_the_operator_can_fix_ends_a_deployment_run_in_one_line(station, tmp_path, prefect_harness,
                                                                        monkeypatch):
    """In a run a deployment started, a GSPError raised after the parameters were accepted (here: the archive
    folder does not exist) ends the run in one line (``failed: ...``), not the engine's traceback; a local
    operator's command gets the error itself, to print."""
    from groundstation.errors import ConfigError
    from flows.reprocess import reprocess_archive

    missing = str(station / "archive" / "no-such-day")
    with pytest.raises(ConfigError, match="no such folder"):
        reprocess_archive(archive=missing)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000000")  # as runners set it
    state = reprocess_archive(archive=missing, return_state=True)
    assert state.is_failed() and state.message == f"failed: --archive {missing}: no such folder", state.message
    name, errors, lines = _run_record(state)
    assert name == "reprocess no-such-day -> default" and errors == [state.message]
    assert not any("Traceback" in line for line in lines), lines
