"""The station's deployments: what `gsp serve` serves and what prefect.yaml declares name the same flows, with
typed parameters and defaults from the station file and the registry."""

from __future__ import annotations

import pytest
import yaml

from groundstation.roots import PathNotAllowed
from helpers import REPO


def test_prefect_yaml_declares_every_job_with_an_importable_entrypoint():
    from prefect.flows import load_flow_from_entrypoint

    from flows.deployments import JOBS as PASS_JOBS
    from groundstation.config import load_station
    from gsp.jobs import JOBS as APP_JOBS

    JOBS = {**PASS_JOBS, **APP_JOBS}  # the passes' flows, and training and evaluation (the application's)

    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    try:  # the model `prefect deploy` validates the file with
        from prefect.cli.deploy._models import PrefectYamlModel
    except ImportError:  # pragma: no cover - a private module of Prefect
        PrefectYamlModel = None
    if PrefectYamlModel is not None:
        model = PrefectYamlModel.model_validate(raw)
        assert len(model.deployments) == len(raw["deployments"])
    deployments = raw["deployments"]
    assert sorted(d["entrypoint"] for d in deployments) == sorted(JOBS.values())
    station = load_station().station
    for d in deployments:
        path, _, name = d["entrypoint"].partition(":")
        assert (REPO / path).is_file(), path
        flow = load_flow_from_entrypoint(str(REPO / path) + ":" + name)
        assert JOBS[flow.name] == d["entrypoint"]
        assert d["name"] == station and f"station:{station}" in d["tags"]
        assert d["work_pool"]["name"] == "gsp-station"
    inbox = next(d for d in deployments if d["entrypoint"].startswith("flows/inbox.py"))
    assert inbox["schedules"][0]["interval"] == 60 and inbox["concurrency_limit"] == 1


@pytest.fixture
def station(tmp_path, monkeypatch):
    home = tmp_path / "st"
    (tmp_path / "station.yaml").write_text(f"station: north-pole\ndecode:\n  synthesis: float64\n"
                                           f"roots:\n  home: {home}\n")
    monkeypatch.setenv("GSP_STATION", str(tmp_path / "station.yaml"))
    return home


def test_served_deployments_take_their_defaults_from_the_station_and_the_registry(station, tmp_path):
    from flows.deployments import station_deployments
    from groundstation.registry import load_registry

    deps = {d.flow_name: d for d in station_deployments(interval=30)}
    assert sorted(deps) == ["apply-supplement", "process-pass", "reprocess-archive", "watch-inbox"]
    products = str(station / "products")
    assert deps["apply-supplement"].parameters == {"products": products}
    for d in deps.values():
        assert d.name == "north-pole" and "station:north-pole" in d.tags
        if d.flow_name == "apply-supplement":
            continue
        opts = d.parameters["options"]
        assert opts["synthesis"] == "float64" and opts["temperature"] is None and opts["strength"] is None  # the op. point
        assert opts["enhancer"] == load_registry().default_enhancer
    assert deps["process-pass"].parameters["out_dir"] == products
    assert deps["process-pass"].entrypoint == "flows.deployments.process_pass_job"
    from prefect.utilities.callables import parameter_schema

    from flows.deployments import process_pass_job

    schema = parameter_schema(process_pass_job)  # the UI's run form
    assert schema.required == ["pass_path"] and "ProcessOptions" in schema.definitions
    assert schema.definitions["ProcessOptions"]["additionalProperties"] is False  # a typo is refused
    assert deps["reprocess-archive"].parameters["archive"] == str(station / "archive")
    inbox = deps["watch-inbox"]
    assert inbox.parameters["inbox"] == str(station / "inbox") and inbox.parameters["products"] == products
    assert inbox.schedules[0].schedule.interval.total_seconds() == 30
    assert inbox.concurrency_limit is None  # a sweep streaming a long pass must not hold back the next pass
    with pytest.raises(PathNotAllowed, match="--products"):
        station_deployments(products=tmp_path / "elsewhere")


def test_training_and_evaluation_deployments_take_their_defaults_from_the_station_and_the_registry(station):
    from prefect.utilities.callables import parameter_schema

    from groundstation.registry import load_registry
    from gsp.jobs import JOBS, evaluate_job, job_deployments, train_codec_job, train_enhancer_job

    deps = {d.flow_name: d for d in job_deployments()}
    assert sorted(deps) == sorted(JOBS) == ["evaluate", "export-product", "train-codec", "train-enhancer"]
    reg = load_registry()
    for flow_name, d in deps.items():
        assert d.name == "north-pole" and "station:north-pole" in d.tags
        if flow_name != "export-product":  # the product to export is the one parameter without a default
            assert d.parameters["out"] == str(station / "runs" / flow_name)
        assert d.entrypoint == JOBS[flow_name].replace("/", ".").replace(".py:", ".")
    codec = reg.models[reg.default_codec]
    opts = deps["train-codec"].parameters["options"]
    assert (opts["N"], opts["M"], opts["groups"], opts["lmbda"]) == (codec.arch["N"], codec.arch["M"],
                                                                      codec.arch["groups"], codec.lmbda)
    arch = reg.models[reg.default_enhancer].arch
    assert deps["train-enhancer"].parameters["options"]["arch"] == \
        f"{arch['blocks']},{arch['coupling_growth']},{arch['cgm_growth']}"
    assert deps["train-enhancer"].parameters["options"]["steps"] is None  # None: the preset's
    assert deps["evaluate"].parameters["rate_points"] == list(reg.rate_points)
    assert job_deployments(name="other")[0].name == "other"

    # the UI's run forms: the input folder is required, typos in the options refused
    assert parameter_schema(train_codec_job).required == ["data"]
    assert parameter_schema(train_enhancer_job).required == ["pairs"]
    schema = parameter_schema(evaluate_job)
    assert schema.required == ["images"] and schema.definitions["SweepOptions"]["additionalProperties"] is False
    assert parameter_schema(train_codec_job).definitions["CodecTrainOptions"]["additionalProperties"] is False


def test_serve_station_serves_the_callers_deployments_too(station, monkeypatch):
    import signal

    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.deployments
    from flows.deployments import serve_station
    from gsp.jobs import job_deployments

    served, said = {}, []
    monkeypatch.setattr(flows.deployments, "_serve_until_stopped",
                        lambda deps, limit, *args: served.update(deps=deps, limit=limit))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # set: no local server is started
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert serve_station(extra_deployments=job_deployments(), limit=1, say=said.append) is None
    assert sorted(d.flow_name for d in served["deps"]) == ["apply-supplement", "evaluate", "export-product", "process-pass", "reprocess-archive",
                                                           "train-codec", "train-enhancer", "watch-inbox"]
    assert served["limit"] == 1 and said[-1].startswith("gsp serve: stopped (the runner ended)")
    # the signal handlers and the mask are as they were (SIGINT is blocked only while serving)
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask


def test_gsp_serve_looks_for_runs_every_two_seconds_unless_the_operator_says_otherwise(monkeypatch):
    """A run started from the UI (or a triggered sweep) starts within 2 s, not Prefect's 10 s runner default."""
    from flows.deployments import SERVE_POLL_S, serve_poll_seconds

    monkeypatch.delenv("PREFECT_RUNNER_POLL_FREQUENCY", raising=False)
    assert serve_poll_seconds() == SERVE_POLL_S == 2.0
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "15")
    assert serve_poll_seconds() == 15.0


def test_the_server_gsp_serve_starts_tells_its_ui_the_api_and_forgets_old_runs(tmp_path, monkeypatch):
    """``gsp serve``'s own server: the UI calls the API where it really is (not Prefect's default port), and
    runs older than the station's keep_runs_days are vacuumed; what the operator set is left as it is."""
    from flows.runtime import server_env

    station = tmp_path / "station.yaml"
    monkeypatch.setenv("GSP_STATION", str(station))
    for var in ("PREFECT_SERVER_UI_API_URL", "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED",
                "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:4200/api")
    station.write_text("orchestration:\n  keep_runs_days: 7\n")
    env = server_env("http://127.0.0.1:4321/api")
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4321/api" and "PREFECT_API_URL" not in env
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events,flow_runs"
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] == str(7 * 86400)
    assert "PREFECT_SERVER_UI_API_URL" not in server_env("http://127.0.0.1:4321/api", tell_ui=False)

    station.write_text("orchestration:\n  keep_runs_days: null\n")
    monkeypatch.setenv("PREFECT_SERVER_UI_API_URL", "http://station.example:4200/api")
    env = server_env("http://127.0.0.1:4321/api")
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://station.example:4200/api"
    assert "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED" not in env

    station.write_text("orchestration:\n  keep_runs_days: 0.01\n")  # Prefect's vacuum needs more than an hour
    from groundstation.errors import ConfigError

    with pytest.raises(ConfigError, match="keep_runs_days"):
        server_env("http://127.0.0.1:4321/api")


def test_the_inbox_trigger_starts_a_sweep_within_a_second_of_a_file_landing(tmp_path):
    import time

    from flows.inbox import InboxTrigger

    calls = []
    trigger = InboxTrigger(tmp_path, calls.append, poll_s=0.05).start()  # an empty inbox: nothing to sweep
    try:
        time.sleep(0.2)
        assert calls == []
        t0 = time.monotonic()
        (tmp_path / "new.gsp.part").write_bytes(b"header")
        while not calls and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        assert calls == [["new.gsp.part"]] and time.monotonic() - t0 < 1.0
        (tmp_path / "new.gsp.part").rename(tmp_path / "new.gsp")  # the writer's rename: a sweep again
        (tmp_path / ".hidden").write_bytes(b"x")
        time.sleep(0.5)
        assert calls == [["new.gsp.part"], ["new.gsp"]]
    finally:
        trigger.stop()


def test_at_its_start_the_inbox_trigger_sweeps_what_arrived_or_was_claimed_while_the_station_was_down(tmp_path):
    """A pass that landed while gsp serve was stopped, and one it had claimed when it stopped, are swept at once
    (one sweep), not at the first scheduled sweep (up to --interval later)."""
    import time

    from flows.inbox import InboxTrigger

    (tmp_path / "old.gsp").write_bytes(b"x")
    (tmp_path / "processing").mkdir()
    (tmp_path / "processing" / "claimed.gsp").write_bytes(b"x")
    (tmp_path / ".streams" / "arriving.gsp").mkdir(parents=True)
    (tmp_path / "done").mkdir()
    calls = []
    trigger = InboxTrigger(tmp_path, calls.append, poll_s=0.05).start()
    try:
        time.sleep(0.5)
        assert calls == [[".streams/arriving.gsp", "old.gsp", "processing/claimed.gsp"]]
    finally:
        trigger.stop()


def test_under_gsp_serve_the_trigger_claims_each_pass_and_starts_its_own_run_under_its_lock(tmp_path, flow_pass):
    """Dispatch mode (gsp serve): a complete pass is claimed into processing/ and its run started while its lock
    is held, the run's id recorded for the sweeps; an arriving pass (its header whole) is claimed as a stream;
    one that stopped short, and a file that is no pass, start one sweep each (which says until when it waits),
    not one per recheck; nothing is claimed twice."""
    import os
    import shutil
    import time

    from flows.inbox import InboxTrigger, _locked

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = flow_pass[1].read_bytes()
    started, swept = [], []

    def dispatch(path):
        assert _locked(inbox, path.name.removesuffix(".part")) is None  # under the pass's lock
        started.append(path)
        return f"run-{len(started)}"

    trigger = InboxTrigger(inbox, swept.append, poll_s=0.05, dispatch=dispatch, settle_s=0.2,
                           recheck_s=0.1).start()
    try:
        shutil.copy(flow_pass[1], inbox / "a.gsp")
        (inbox / "b.gsp.part").write_bytes(data[: len(data) // 2])  # arriving: its header is whole
        (inbox / "c.gsp").write_bytes(data[:-40])  # no end-of-pass trailer: stopped short
        (inbox / "junk.gsp").write_bytes(b"GSP junk")  # no pass
        t0 = time.monotonic()
        while len(started) < 2 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        time.sleep(1.0)  # several rechecks
        assert sorted(p.relative_to(inbox).as_posix() for p in started) == ["b.gsp.part", "processing/a.gsp"]
        assert (inbox / ".locks" / "a.gsp.run").read_text().strip() in ("run-1", "run-2")
        assert (inbox / ".streams" / "b.gsp").is_dir() and (inbox / ".locks" / "b.gsp.run").is_file()
        assert sorted(n for names in swept for n in names) == ["c.gsp", "junk.gsp"]  # each once
    finally:
        trigger.stop()
        trigger.thread.join(5)
    # a restart: claims whose runs are gone (their records dropped) each get a run of their own again
    (inbox / ".locks" / "a.gsp.run").unlink()
    os.remove(inbox / ".locks" / "b.gsp.run")
    started.clear()
    trigger = InboxTrigger(inbox, swept.append, poll_s=0.05, dispatch=dispatch, settle_s=0.2).start()
    try:
        time.sleep(0.6)
        assert sorted(p.relative_to(inbox).as_posix() for p in started) == ["b.gsp.part", "processing/a.gsp"]
    finally:
        trigger.stop()

