"""The station in the Prefect UI, driven in headless Chromium (Debian's ``chromium`` through Playwright; no
browser is downloaded): a real ``prefect server start`` on a non-default port (the UI told its API URL by
flows.runtime.local_prefect_server), ``gsp serve`` on a station folder, one pass processed and one refused from
the process-pass deployment (and one from reprocess-archive), a pass that stopped short dropped into the inbox;
then the deployments page, the run form, the finished run with its report (its quicklook picture shown) and
metrics table, the refused runs with their reason, and the sweep that says until when it waits for the rest
of the short pass, as an operator sees them.

Set GSP_UI_SCREENSHOTS=docs/images to refresh the screenshots the docs show (the tests always write them under
their temporary folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import make_pass
from servers import CHROMIUM_ARGS, chromium_path, make_station, prefect_server, served_station, wait_for

pytestmark = [pytest.mark.server, pytest.mark.slow]

STATION = "ui-station"
JOBS = ("process-pass", "reprocess-archive", "watch-inbox", "apply-supplement", "train-codec", "train-enhancer",
        "evaluate", "export-product")
#: How long a page may take to show what it is asked for (the UI loads its data after the page itself).
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def station_ui(tmp_path_factory, tiny_codec, enhancer_ckpts):
    """(UI base URL, API URL, {"done": run, "refused": run, "refused-archive": run}, screenshot folder) after the
    three runs finished."""
    chromium_path()  # skip before starting anything where the browser is absent
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("station-ui")
    home, station = make_station(tmp, STATION, tiny_codec, enhancer_ckpts[0])
    make_pass(home / "archive", tiny_codec, "ui-pass-1", seed=5)
    _, outside = make_pass(tmp / "outside", tiny_codec, "outside-pass", seed=7, height=64, width=64)
    with prefect_server(tmp / "server-home") as api, served_station(tmp, station, api, "--limit", "2") as proc, \
            temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        log_path = tmp / "serve.log"

        def served():
            assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
            try:
                return [client.read_deployment_by_name(f"{job}/{STATION}") for job in JOBS]
            except Exception:  # noqa: BLE001 - not all registered yet
                return None

        wait_for("the served deployments", served, 300, log_path)
        started = {"done": run_deployment(f"process-pass/{STATION}", timeout=0,
                                          parameters={"pass_path": str(home / "archive" / "ui-pass-1.gsp")}),
                   "refused": run_deployment(f"process-pass/{STATION}", timeout=0,
                                             parameters={"pass_path": str(outside)}),
                   "refused-archive": run_deployment(f"reprocess-archive/{STATION}", timeout=0,
                                                     parameters={"archive": str(outside.parent)})}
        # a pass that stopped short (no end-of-pass trailer) lands in the inbox: a sweep says until when it waits
        short = make_pass(tmp / "short", tiny_codec, "ui-short", seed=9)[1].read_bytes()[:-40]
        (home / "inbox" / "ui-short.gsp.tmp").write_bytes(short)
        (home / "inbox" / "ui-short.gsp.tmp").rename(home / "inbox" / "ui-short.gsp")
        runs = {key: wait_for(f"the {key} run", lambda r=run: (x := client.read_flow_run(r.id)).state.is_final()
                              and x, 600, log_path) for key, run in started.items()}
        yield api.removesuffix("/api"), api, runs, tmp / "screenshots"


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
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


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
    ui, _, _, shots = station_ui
    page = _open(browser, f"{ui}/deployments", "export-product")
    text = page.inner_text("body")
    assert f"{len(JOBS)} Deployments" in text
    for job in JOBS:
        page.get_by_text(job, exact=True).first.wait_for()
    _screenshot(page, shots, "ui-deployments.png")


def test_the_run_form_shows_every_field_with_its_description(station_ui, browser):
    import httpx

    ui, api, _, shots = station_ui
    dep = httpx.get(f"{api}/deployments/name/process-pass/{STATION}").json()
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
    ui, _, runs, shots = station_ui
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
    ui, _, runs, shots = station_ui
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


def test_a_pass_that_stopped_short_is_said_at_once_on_the_console_and_in_the_sweep(station_ui, browser):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ui, api, _, shots = station_ui
    said = wait_for("the console's waiting line", lambda: [
        line for line in (shots.parent / "serve.log").read_text(errors="replace").splitlines()
        if line.startswith("inbox: waiting for the rest of ui-short.gsp until ")], 120)
    assert "(5 of 6 tiles, no end-of-pass trailer)" in said[0]
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        sweep = wait_for("a finished sweep", lambda: [r for r in client.read_flow_runs()
                                                      if r.name == "sweep inbox" and r.state.is_final()], 120)[0]
    page = _open(browser, f"{ui}/runs/flow-run/{sweep.id}", "sweep inbox")
    page.get_by_text("waiting for the rest of ui-short.gsp until").first.wait_for()
    _screenshot(page, shots, "ui-inbox-waiting.png")
