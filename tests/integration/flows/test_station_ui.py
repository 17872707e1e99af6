"""The station served to its operators, as in production (docs/operations.md): a real ``prefect server start``
with Prefect's basic authentication on PostgreSQL (a throwaway cluster; SQLite where PostgreSQL is not
installed), on a non-default port (the UI told its API URL by flows.runtime.local_prefect_server); ``gsp serve``
(authenticated) serving every job as a deployment on a station folder. Through the API, as the UI's Run button
does: a pass processed, a pass whose downlink was cut, an archive reprocessed, a pass outside the station's roots
refused (and an archive alike); a pass that stopped short dropped into the inbox. Then the API's checks (the auth
string, names, tags, artifacts, events) and, in headless Chromium (Debian's ``chromium`` through Playwright; no
browser is downloaded) after the UI's login, the deployments page, the run form, the finished run with its report
(its quicklook picture shown) and metrics table, the refused runs with their reason, and the sweep that says
until when it waits for the rest of the short pass, as an operator sees them. One server and one ``gsp serve``
for the whole module.

Set GSP_UI_SCREENSHOTS=docs/images to refresh the screenshots the docs show (the tests always write them under
their temporary folder)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import make_pass
from servers import (CHROMIUM_ARGS, chromium_path, make_station, postgres_cluster, prefect_server, served_station,
                     wait_for)

pytestmark = [pytest.mark.server, pytest.mark.slow]

STATION = "ui-station"
#: The station's basic-auth string (server and clients; the UI asks for it at its login).
AUTH = "station-operator:correct-horse-battery"
JOBS = ("process-pass", "reprocess-archive", "watch-inbox", "apply-supplement", "train-codec", "train-enhancer",
        "evaluate", "export-product")
#: How long a page may take to show what it is asked for (the UI loads its data after the page itself).
PAGE_TIMEOUT_MS = 30_000


def _settings(url: str, auth: str | None = AUTH):
    """Prefect client settings for ``url``, with the auth string or explicitly without one."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: url}
    if auth is not None:
        updates[PREFECT_API_AUTH_STRING] = auth
    return temporary_settings(updates=updates, restore_defaults=set() if auth else {PREFECT_API_AUTH_STRING})


@pytest.fixture(scope="module")
def station_ui(tmp_path_factory, tiny_codec, enhancer_ckpts):
    """The station runs its passes on a long-lived external Dask cluster (``--dask-address``), as a station with
    an external cluster does; ``gsp serve``'s default (a cluster of its own) is tested in test_serve_console.py. Not
    the session's shared cluster: its workers already reported task runs to the session's test API, and a
    worker keeps reporting to the API it first talked to (one station, one API: as in production).
    (UI base URL, API URL, {"done", "refused", "refused-archive", "cut", "archive": run}, screenshot folder,
    station home, serve process) after the five runs finished."""
    from distributed import LocalCluster
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from flows.cluster import local_cluster_kwargs

    tmp = tmp_path_factory.mktemp("station-ui")
    home, station = make_station(tmp, STATION, tiny_codec, enhancer_ckpts[0])
    make_pass(home / "archive", tiny_codec, "ui-pass-1", seed=5)
    _, damaged = make_pass(tmp / "src", tiny_codec, "dep-pass-1", seed=6)
    (home / "archive" / "cut").mkdir()
    (home / "archive" / "cut" / "dep-pass-1.gsp").write_bytes(damaged.read_bytes()[:-40])  # last record cut short
    make_pass(home / "archive" / "good", tiny_codec, "dep-pass-2", seed=8)
    _, outside = make_pass(tmp / "outside", tiny_codec, "outside-pass", seed=7, height=64, width=64)
    with contextlib.ExitStack() as stack:
        try:
            database = stack.enter_context(postgres_cluster())
        except pytest.skip.Exception:
            database = None
        api = stack.enter_context(prefect_server(tmp / "server-home", database, PREFECT_SERVER_API_AUTH_STRING=AUTH))
        cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs()))
        proc = stack.enter_context(served_station(tmp, station, api, "--limit", "3", "--dask-address",
                                                  cluster.scheduler_address, PREFECT_API_AUTH_STRING=AUTH))
        stack.enter_context(_settings(api))
        client = stack.enter_context(get_client(sync_client=True))
        log_path = tmp / "serve.log"

        def served():
            assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
            try:
                return [client.read_deployment_by_name(f"{job}/{STATION}") for job in JOBS]
            except Exception:  # noqa: BLE001 - not all registered yet
                return None

        wait_for("the served deployments", served, 300, log_path)
        # what the UI's Run button does; all at once (gsp serve runs up to --limit 3, the rest wait their turn)
        started = {"done": run_deployment(f"process-pass/{STATION}", timeout=0,
                                          parameters={"pass_path": str(home / "archive" / "ui-pass-1.gsp")}),
                   "cut": run_deployment(f"process-pass/{STATION}", timeout=0,
                                         parameters={"pass_path": str(home / "archive" / "cut" / "dep-pass-1.gsp")}),
                   "archive": run_deployment(f"reprocess-archive/{STATION}", timeout=0,
                                             parameters={"glob": "good/*.gsp"}),
                   "refused": run_deployment(f"process-pass/{STATION}", timeout=0,
                                             parameters={"pass_path": str(outside)}),
                   "refused-archive": run_deployment(f"reprocess-archive/{STATION}", timeout=0,
                                                     parameters={"archive": str(outside.parent)})}
        # a pass that stopped short (no end-of-pass trailer) lands in the inbox: a sweep says until when it waits
        short = make_pass(tmp / "short", tiny_codec, "ui-short", seed=9)[1].read_bytes()[:-40]
        (home / "inbox" / "ui-short.gsp.tmp").write_bytes(short)
        (home / "inbox" / "ui-short.gsp.tmp").rename(home / "inbox" / "ui-short.gsp")
        # a complete pass lands in the inbox: it gets a process-pass run of its own
        make_pass(tmp / "landed", tiny_codec, "ui-inbox-1", seed=10)[1].rename(home / "inbox" / "ui-inbox-1.gsp")
        runs = {key: wait_for(f"the {key} run", lambda r=run: (x := client.read_flow_run(r.id)).state.is_final()
                              and x, 900, log_path) for key, run in started.items()}
        yield api.removesuffix("/api"), api, runs, tmp / "screenshots", home, cluster.scheduler_address


@pytest.fixture(scope="module")
def browser(station_ui):
    """One headless Chromium (a fresh profile, nothing fetched from the network) for the module's pages."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="gsp-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            _login(context, station_ui[0])
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _login(browser, ui: str) -> None:
    """The UI's first page asks for the station's auth string (the server has one); once given, the UI keeps it
    for the session (its local storage) and every page loads."""
    page = browser.new_page()
    page.goto(ui)
    field = page.get_by_placeholder("admin:pass")
    field.wait_for()
    field.fill(AUTH)
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Dashboard").first.wait_for()
    page.close()


def _screenshot(page, shots: Path, name: str) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / name), full_page=True)
    if os.environ.get("GSP_UI_SCREENSHOTS"):
        Path(os.environ["GSP_UI_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shots / name, Path(os.environ["GSP_UI_SCREENSHOTS"]) / name)


def _open(browser, url: str, expect: str):
    """A page at ``url`` once ``expect`` shows on it (and the UI reached its API: no connection error)."""
    page = browser.new_page()
    page.goto(url)
    page.get_by_text(expect, exact=False).first.wait_for()
    assert "Can't connect to Server API" not in page.inner_text("body")
    return page


def test_the_deployments_page_lists_every_job(station_ui, browser):
    ui, _, _, shots, _, _ = station_ui
    page = _open(browser, f"{ui}/deployments", "export-product")
    text = page.inner_text("body")
    assert f"{len(JOBS)} Deployments" in text
    for job in JOBS:
        page.get_by_text(job, exact=True).first.wait_for()
    _screenshot(page, shots, "ui-deployments.png")


def test_the_run_form_shows_every_field_with_its_description(station_ui, browser):
    import httpx

    ui, api, _, shots, _, _ = station_ui
    dep = httpx.get(f"{api}/deployments/name/process-pass/{STATION}", auth=tuple(AUTH.split(":", 1))).json()
    schema = dep["parameter_openapi_schema"]
    fields = dict(schema["properties"])
    for ref in schema.get("definitions", {}).values():  # the options model's fields, shown nested in the form
        fields.update(ref.get("properties", {}))
    page = _open(browser, f"{ui}/deployments/deployment/{dep['id']}/run", "pass_path")
    text = page.inner_text("body")
    missing = [name for name, f in fields.items() if not f.get("description")]
    assert not missing, f"parameters without a description: {missing}"
    unshown = [f"{name}: {f['description']}" for name, f in fields.items() if f["description"] not in text]
    assert not unshown, "descriptions not shown as written (eaten as HTML?):\n" + "\n".join(unshown)
    _screenshot(page, shots, "ui-run-form.png")


def test_a_finished_run_shows_its_name_its_report_and_its_table(station_ui, browser):
    ui, _, runs, shots, _, _ = station_ui
    run = runs["done"]
    assert run.state.is_completed(), run.state.message
    assert run.name.startswith("ui-pass-1 @ ")
    console = wait_for("the pass's line on the serve console", lambda: [
        line for line in (shots.parent / "serve.log").read_text(errors="replace").splitlines()
        if line.startswith("pass ui-pass-1: received ")], 30)
    assert "tiles lost 0 of 6" in console[0] and "latency" in console[0]
    page = _open(browser, f"{ui}/runs/flow-run/{run.id}", run.name)
    _screenshot(page, shots, "ui-flow-run.png")

    def artifact(key: str) -> None:  # the run's Artifacts tab, then the artifact's card
        page.goto(f"{ui}/runs/flow-run/{run.id}")
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text(key).first.click()

    artifact("gsp-ui-pass-1-report")  # the markdown report, its quicklook shown inside it
    page.get_by_text("tiles decoded").first.wait_for()
    assert "ui-pass-1" in page.inner_text("body")
    picture = page.locator("img[alt^='Quicklook of pass ui-pass-1']").first
    picture.wait_for()
    size = picture.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]")
    assert size[0] and size[1] >= 300 and size[2] >= 150 and size[3] >= 200, size  # decoded and on screen
    _screenshot(page, shots, "ui-report.png")
    artifact("gsp-ui-pass-1-tiles")  # the metrics table: short columns, the version not repeated
    page.get_by_role("table").first.wait_for()
    header = page.get_by_role("table").first.inner_text().splitlines()[0]
    assert header.split("\t")[:5] == ["tile", "product", "status", "bytes", "bpp"], header
    assert "decode ms" in header and "product_version" not in header and "note" not in header
    assert run.name.split(" @ ")[1] not in page.get_by_role("table").first.inner_text()
    _screenshot(page, shots, "ui-metrics-table.png")


def test_a_refused_run_shows_the_reason(station_ui, browser):
    ui, _, runs, shots, _, _ = station_ui
    run = runs["refused"]
    assert run.state.is_failed() and run.state.message.startswith("refused: pass_path "), run.state.message
    assert run.name == "refused: outside-pass.gsp"  # named after the pass, whose file was not read
    page = _open(browser, f"{ui}/runs/flow-run/{run.id}", run.name)
    page.get_by_text("outside the station's roots").first.wait_for()
    assert "Traceback" not in page.inner_text("body")  # one line, not the engine's traceback
    _screenshot(page, shots, "ui-refused-run.png")
    # reprocess-archive alike (every deployment validates its parameters first: tests/unit/flows/test_access.py)
    run = runs["refused-archive"]
    assert run.state.is_failed() and run.state.message.startswith("refused: archive "), run.state.message
    assert run.name == "refused: reprocess outside"
    page = _open(browser, f"{ui}/runs/flow-run/{run.id}", run.name)
    page.get_by_text("outside the station's roots").first.wait_for()
    assert "Traceback" not in page.inner_text("body")


def test_a_pass_that_lands_in_the_inbox_is_a_run_of_the_process_pass_deployment(station_ui, browser):
    """Listed on the process-pass deployment's page under the pass's name (not hidden in a sweep), completed,
    the pass moved to done/."""
    from prefect.client.orchestration import get_client

    ui, api, _, shots, home, _ = station_ui
    with _settings(api), get_client(sync_client=True) as client:
        run = wait_for("the landed pass's run to finish", lambda: [
            r for r in client.read_flow_runs() if r.name.startswith("ui-inbox-1 @ ") and r.state.is_final()], 300)[0]
        deployment = client.read_deployment(run.deployment_id)
    assert run.state.is_completed(), run.state.message
    assert deployment.name == STATION and run.parent_task_run_id is None
    assert (home / "inbox" / "done" / "ui-inbox-1.gsp").is_file()
    page = _open(browser, f"{ui}/deployments/deployment/{deployment.id}", "process-pass")
    page.get_by_text("Runs", exact=True).first.click()
    page.get_by_text(run.name).first.wait_for()
    _screenshot(page, shots, "ui-deployment-runs.png")


def test_a_pass_that_stopped_short_is_said_at_once_on_the_console_and_in_the_sweep(station_ui, browser):
    from prefect.client.orchestration import get_client

    ui, api, _, shots, _, _ = station_ui
    said = wait_for("the console's waiting line", lambda: [
        line for line in (shots.parent / "serve.log").read_text(errors="replace").splitlines()
        if line.startswith("inbox: waiting for the rest of ui-short.gsp until ")], 120)
    assert "(5 of 6 tiles, no end-of-pass trailer)" in said[0]
    with _settings(api), get_client(sync_client=True) as client:
        sweep = wait_for("a finished sweep", lambda: [r for r in client.read_flow_runs()
                                                      if r.name == "sweep inbox" and r.state.is_final()], 120)[0]
    page = _open(browser, f"{ui}/runs/flow-run/{sweep.id}", "sweep inbox")
    page.get_by_text("waiting for the rest of ui-short.gsp until").first.wait_for()
    _screenshot(page, shots, "ui-inbox-waiting.png")


def test_the_server_refuses_a_client_without_the_auth_string(station_ui):
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    api = station_ui[1]
    assert httpx.post(f"{api}/flows/filter", json={}).status_code == 401
    assert httpx.post(f"{api}/flows/filter", json={}, auth=("station-operator", "wrong")).status_code == 401
    user, password = AUTH.split(":", 1)
    assert httpx.post(f"{api}/flows/filter", json={}, auth=(user, password)).status_code == 200
    with _settings(api, None), get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError) as exc:
            client.read_flows()
        assert exc.value.response.status_code == 401
    with _settings(api), get_client(sync_client=True) as client:
        client.read_flows()  # PREFECT_API_AUTH_STRING on the client: accepted


def _summary(home, pass_id: str) -> dict:
    import zarr

    (product,) = (home / "products" / pass_id).glob("*.zarr")
    return dict(zarr.open_group(str(product), mode="r").attrs)["gsp_summary"]


def test_every_job_runs_from_its_deployment(station_ui):
    """The served deployments' parameters and tags; process-pass on a cut pass and reprocess-archive (started
    by the fixture, as the Run button does) completed with readable names, tags, artifacts and events; a pass
    outside the roots failed before it started."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter,
                                                FlowRunFilterId, FlowRunFilterParentFlowRunId)
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.events.filters import EventFilter, EventNameFilter

    from groundstation.product import status

    _, api, runs, _, home, station_cluster = station_ui
    with _settings(api), get_client(sync_client=True) as client:
        by_flow = {job: client.read_deployment_by_name(f"{job}/{STATION}") for job in JOBS}
        # training and evaluation (gsp.jobs), served beside them; run in test_flows_jobs.py, not here
        for job in ("train-codec", "train-enhancer", "evaluate"):
            assert by_flow[job].parameters["out"] == str(home / "runs" / job)
            assert "station:ui-station" in by_flow[job].tags
            assert by_flow[job].entrypoint == f"gsp.jobs.{job.replace('-', '_')}_job"
        assert by_flow["apply-supplement"].parameters == {"products": str(home / "products")}
        assert by_flow["process-pass"].parameters["out_dir"] == str(home / "products")
        assert by_flow["watch-inbox"].schedules and "station:ui-station" in by_flow["watch-inbox"].tags

        # process-pass: completed with its lost tiles listed, named after the pass and the version, tagged
        run = runs["cut"]
        assert run.state.is_completed(), run.state.message
        result = _summary(home, "dep-pass-1")  # the run's return value, as the product stores it
        assert result["tiles_lost"] >= 1 and status(result["product"]) == "complete"
        assert result["flow_run_id"] == str(run.id)
        assert result["product"].startswith(str(home / "products"))
        assert run.name == f"dep-pass-1 @ {result['version']}"
        assert {"gsp", "station:ui-station", "codec:tiny.pt", "enhancer:enh-a.pt"} <= set(run.tags)
        # task runs reach the API through events, after the flow run's own final state: wait for the named ones
        wanted = {"decode-tiles-b0000", "enhance-windows-b0000"}

        def completed_task_names():
            names = {t.name for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[run.id]))) if t.state and t.state.is_completed()}
            return names if wanted <= names else None

        wait_for("the run's decode and enhance task runs", completed_task_names, 90)
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run.id])))
        assert sorted(a.type for a in arts) == ["markdown", "progress", "table"]
        # it ran on the station's cluster (gsp serve --dask-address), not on a LocalCluster of its own
        said = [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[run.id])))]
        assert any(m.startswith(f"Dask cluster at {station_cluster}: ") for m in said), said

        # reprocess-archive: completed, named after the archive, one process-pass subflow named after its pass
        run = runs["archive"]
        assert run.state.is_completed(), run.state.message
        assert run.name == "reprocess archive -> enh-a.pt"
        assert _summary(home, "dep-pass-2")["tiles_lost"] == 0
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
        assert [s.name.split(" @ ")[0] for s in subflows] == ["dep-pass-2"]

        # a pass outside the roots: the run failed before it started, nothing was written
        run = runs["refused"]
        assert run.state.is_failed() and "outside the station's roots" in (run.state.message or ""), run.state
        assert not [p for p in (home / "products").rglob("*") if "outside" in p.name]
        assert not client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))

        # the events, through the API
        def events():
            page = client.read_events(filter=EventFilter(event=EventNameFilter(
                name=["gsp.pass.tiles-lost", "gsp.product.complete"])), limit=50)
            got = {(e.event, e.payload["pass_id"]): e for e in page.events}
            return got if len(got) >= 3 else None

        got = wait_for("the events", events, 90)
        lost = got[("gsp.pass.tiles-lost", "dep-pass-1")]
        assert lost.resource.id == "gsp.pass.dep-pass-1"
        assert [r["tile"] for r in lost.payload["retransmission"]] == [d["tile"] for d in result["lost"]]
        done = got[("gsp.product.complete", "dep-pass-1")]
        assert done.payload["paths"]["product"] == result["product"]
        assert set(done.payload["metrics"]) == {"decoded", "enhanced"}
        assert ("gsp.product.complete", "dep-pass-2") in got
        assert ("gsp.pass.tiles-lost", "dep-pass-2") not in got
