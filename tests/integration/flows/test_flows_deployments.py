"""The station from the Prefect UI, against a real ``prefect server start`` with Prefect's basic authentication:
a client without the auth string is refused; ``gsp serve`` (authenticated) serves every job as a deployment
(training and evaluation included);
``run_deployment`` (what the UI's Run button does) runs process-pass and reprocess-archive to completion with
readable names and tags, their artifacts and their events; a path outside the station's roots fails the run
before it starts."""

from __future__ import annotations

import contextlib

import pytest

import servers
from helpers import make_pass
from servers import make_station, postgres_cluster, prefect_server, wait_for

pytestmark = [pytest.mark.server, pytest.mark.slow]

AUTH = "station-operator:correct-horse-battery"
STATION = "it-station"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``prefect server start`` on 127.0.0.1 with PREFECT_SERVER_API_AUTH_STRING (only the server has it) and its
    own PREFECT_HOME, on PostgreSQL (a throwaway cluster, the production set-up of docs/operations.md) where
    PostgreSQL is installed, else on SQLite."""
    home = tmp_path_factory.mktemp("auth-server-home")
    with contextlib.ExitStack() as stack:
        try:
            database = stack.enter_context(postgres_cluster())
        except pytest.skip.Exception:
            database = None
        yield stack.enter_context(prefect_server(home, database, PREFECT_SERVER_API_AUTH_STRING=AUTH))


def _settings(url: str, auth: str | None):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: url}
    if auth is not None:
        updates[PREFECT_API_AUTH_STRING] = auth
    return temporary_settings(updates=updates, restore_defaults=set() if auth else {PREFECT_API_AUTH_STRING})


def test_the_server_refuses_a_client_without_the_auth_string(auth_server):
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    assert httpx.post(f"{auth_server}/flows/filter", json={}).status_code == 401
    assert httpx.post(f"{auth_server}/flows/filter", json={}, auth=("station-operator", "wrong")).status_code == 401
    user, password = AUTH.split(":", 1)
    assert httpx.post(f"{auth_server}/flows/filter", json={}, auth=(user, password)).status_code == 200
    with _settings(auth_server, None), get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError) as exc:
            client.read_flows()
        assert exc.value.response.status_code == 401
    with _settings(auth_server, AUTH), get_client(sync_client=True) as client:
        client.read_flows()  # PREFECT_API_AUTH_STRING on the client: accepted


def _truncate(src, dest, cut: int = 40):
    dest.write_bytes(src.read_bytes()[:-cut])  # the last tile record cut short, no end-of-pass trailer


@pytest.fixture
def served_station(auth_server, tmp_path, tiny_codec, enhancer_ckpts):
    """A station folder (roots under tmp_path), passes in its archive, checkpoints in its weights, and
    ``gsp serve`` running against the authenticated server in its own process group."""
    home, station = make_station(tmp_path, STATION, tiny_codec, enhancer_ckpts[0])
    _, damaged_src = make_pass(tmp_path / "src", tiny_codec, "dep-pass-1", seed=5)
    (home / "archive" / "cut").mkdir()
    _truncate(damaged_src, home / "archive" / "cut" / "dep-pass-1.gsp")
    make_pass(home / "archive" / "good", tiny_codec, "dep-pass-2", seed=6)
    make_pass(tmp_path / "outside", tiny_codec, "outside-pass", seed=7, height=64, width=64)
    with servers.served_station(tmp_path, station, auth_server, "--limit", "3",
                                PREFECT_API_AUTH_STRING=AUTH) as proc:
        yield home, tmp_path, proc


def _summary(home, pass_id: str) -> dict:
    import zarr

    (product,) = (home / "products" / pass_id).glob("*.zarr")
    return dict(zarr.open_group(str(product), mode="r").attrs)["gsp_summary"]


@pytest.mark.timeout(1200)
def test_every_job_runs_from_its_deployment(served_station, auth_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter,
                                                FlowRunFilterId, FlowRunFilterParentFlowRunId)
    from prefect.deployments import run_deployment
    from prefect.events.filters import EventFilter, EventNameFilter

    from groundstation.product import status

    home, tmp_path, proc = served_station
    log_path = tmp_path / "serve.log"
    # every served deployment, waited for together (serve registers them one by one)
    names = [f"{job}/{STATION}" for job in ("process-pass", "reprocess-archive", "watch-inbox", "apply-supplement",
                                            "train-codec", "train-enhancer", "evaluate", "export-product")]
    with _settings(auth_server, AUTH), get_client(sync_client=True) as client:
        def deployments():
            assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
            found = []
            for name in names:
                try:
                    found.append(client.read_deployment_by_name(name))
                except Exception:  # noqa: BLE001 - not registered yet
                    return None
            return found

        deps = wait_for("the served deployments", deployments, 300, log_path)
        by_flow = {name.split("/")[0]: d for name, d in zip(names, deps)}
        # training and evaluation (gsp.jobs), served beside them; run in test_flows_jobs.py, not here
        for job in ("train-codec", "train-enhancer", "evaluate"):
            dep = client.read_deployment_by_name(f"{job}/{STATION}")
            assert dep.parameters["out"] == str(home / "runs" / job) and "station:it-station" in dep.tags
            assert dep.entrypoint == f"gsp.jobs.{job.replace('-', '_')}_job"
        assert client.read_deployment_by_name(f"apply-supplement/{STATION}").parameters == {
            "products": str(home / "products")}
        assert by_flow["process-pass"].parameters["out_dir"] == str(home / "products")
        assert by_flow["watch-inbox"].schedules and "station:it-station" in by_flow["watch-inbox"].tags

        # what the UI's Run button does; all three at once (gsp serve runs up to --limit 3)
        pass_run = run_deployment(names[0], parameters={"pass_path": str(home / "archive" / "cut" /
                                                                            "dep-pass-1.gsp")}, timeout=0)
        archive_run = run_deployment(names[1], parameters={"glob": "good/*.gsp"}, timeout=0)
        refused_run = run_deployment(names[0], parameters={"pass_path": str(tmp_path / "outside" /
                                                                              "outside-pass.gsp")}, timeout=0)
        runs = {}
        for key, run in (("pass", pass_run), ("archive", archive_run), ("refused", refused_run)):
            runs[key] = wait_for(f"{key} run", lambda: (r := client.read_flow_run(run.id)).state.is_final() and r,
                                  900, log_path)

        # process-pass: completed with its lost tiles listed, named after the pass and the version, tagged
        run = runs["pass"]
        assert run.state.is_completed(), run.state.message
        result = _summary(home, "dep-pass-1")  # the run's return value, as the product stores it
        assert result["tiles_lost"] >= 1 and status(result["product"]) == "complete"
        assert result["flow_run_id"] == str(run.id)
        assert result["product"].startswith(str(home / "products"))
        assert run.name == f"dep-pass-1 @ {result['version']}"
        assert {"gsp", "station:it-station", "codec:tiny.pt", "enhancer:enh-a.pt"} <= set(run.tags)
        tasks = wait_for("task runs", lambda: [t for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[run.id]))) if t.state and t.state.is_completed()], 60)
        task_names = {t.name for t in tasks}
        assert "decode-tiles-b0000" in task_names and "enhance-windows-b0000" in task_names
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run.id])))
        assert sorted(a.type for a in arts) == ["markdown", "progress", "table"]

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
