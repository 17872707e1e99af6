"""process-pass: planning and scheduling invariants, the end-to-end flow on a real LocalCluster, idempotency,
resume after an interrupted run, and a worker crash that costs only its batch."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from groundstation.errors import CheckpointError, ConfigError

TILES = 6  # 200x300 scene, 128-px tiles


# ------------------------------------------------------------------------------------------------ fast units
def test_options_validate_before_the_run():
    from flows.process_pass import ProcessOptions

    with pytest.raises(ConfigError, match="--halo: .*must be even"):
        ProcessOptions.build(halo=31)
    with pytest.raises(ConfigError, match="--tiles-per-batch"):
        ProcessOptions.build(tiles_per_batch=0)
    with pytest.raises(ConfigError, match="--temperature"):
        ProcessOptions.build(temperature=-1)


def test_cog_is_an_option_of_process_and_reprocess_and_of_the_ui_form():
    from flows.identity import ModelRef, product_version
    from flows.options import ProcessOptions
    from gsp.cli import build_parser
    from gsp.cli.station import _options

    parse = build_parser().parse_args
    assert _options(parse(["process", "p.gsp", "-o", "out", "--cog"])).cog is True
    assert _options(parse(["process", "p.gsp", "-o", "out"])).cog is False
    assert _options(parse(["reprocess", "--archive", "a", "--products", "b", "--enhancer", "e", "--cog"])).cog
    field = ProcessOptions.model_json_schema()["properties"]["cog"]
    assert field["default"] is False and ".enhanced.tif" in field["description"]  # the deployment form says where
    codec = ModelRef("c", "c.pt", "a" * 64, {})
    assert product_version(codec, None, ProcessOptions(cog=True)) == product_version(codec, None, ProcessOptions())


def test_without_a_temperature_the_registrys_operating_point_is_used():
    """The rate point's temperature and strength (chosen on validation images) when none is given; each knob
    given wins on its own; an enhancer that is no rate point's gets the deterministic mean, all of its change."""
    from flows.identity import FALLBACK_TEMPERATURE, ModelRef, with_operating_point
    from flows.options import ProcessOptions
    from groundstation.registry import load_registry

    reg = load_registry()
    name, point = next(iter(reg.rate_points.items()))
    entry = reg.models[point.enhancer]
    enh = ModelRef(point.enhancer, entry.path, entry.sha256, {})
    decided = with_operating_point(ProcessOptions(), enh)
    assert (decided.temperature, decided.strength) == (point.temperature, point.strength)
    decided = with_operating_point(ProcessOptions(temperature=0.7), enh)
    assert (decided.temperature, decided.strength) == (0.7, point.strength)
    decided = with_operating_point(ProcessOptions(strength=0.6), enh)
    assert (decided.temperature, decided.strength) == (point.temperature, 0.6)
    stranger = ModelRef("elsewhere", "x.pt", "f" * 64, {})
    decided = with_operating_point(ProcessOptions(), stranger)
    assert (decided.temperature, decided.strength) == (FALLBACK_TEMPERATURE, 1.0)
    with pytest.raises(ValueError, match="strength"):
        ProcessOptions(strength=0)
    with pytest.raises(ValueError, match="strength"):
        ProcessOptions(strength=1.2)
    with pytest.raises(ValueError, match="6 significant digits"):  # would print as -a0p8, another product's name
        ProcessOptions(strength=0.80000001)


def test_a_product_made_before_the_strength_knob_keeps_its_version():
    """A supplement re-resolves the product's stored options: one stored before the strength existed kept all of the
    enhancer's change, so its version must not pick up a rate point's strength below 1 (l0130's, say)."""
    from flows.identity import ModelRef, product_version, with_operating_point
    from flows.options import ProcessOptions
    from groundstation.registry import load_registry

    reg = load_registry()
    weak = [p for p in reg.rate_points.values() if p.strength < 1]
    assert weak, "no rate point with a strength below 1: this test needs one"
    entry = reg.models[weak[0].enhancer]
    enh = ModelRef(weak[0].enhancer, entry.path, entry.sha256, {})
    codec = ModelRef("c", "c.pt", "a" * 64, {})
    old = {"temperature": 0.0, "seed": 0, "halo": 32, "decode_mode": "mosaic", "mosaic_synthesis": "tuned"}
    opts = with_operating_point(ProcessOptions.stored(old), enh)
    assert opts.strength == 1.0 and "-a" not in product_version(codec, enh, opts).split("__")[1]
    assert ProcessOptions.stored({}).decode_mode == "tile"  # older still: decoded tile by tile
    assert with_operating_point(ProcessOptions(temperature=0.0), enh).strength == weak[0].strength  # a new run


def test_the_registry_decides_the_operating_point_one_knob_at_a_time(tiny_codec, other_codec, enhancer_ckpts):
    from groundstation.fileio import sha256_file
    from helpers import two_point_registry

    reg = two_point_registry(tiny_codec, other_codec, enhancer_ckpts[1], enhancer_ckpts[0], temperature=0.25,
                             strength=0.8)
    sha = sha256_file(enhancer_ckpts[0])
    assert reg.operating_point(sha) == ("lo", 0.25, 0.8, ())
    assert reg.operating_point(sha, temperature=0.0) == ("lo", 0.0, 0.8, ("temperature",))
    assert "strength 0.8: the operating point of rate point lo" in reg.operating_point(sha, temperature=0).describe()
    assert reg.operating_point("0" * 64) == (None, 0.0, 1.0, ())
    assert "no rate point" in reg.operating_point("0" * 64).describe()
    said = reg.operating_point("0" * 64, temperature=0.5).describe()
    assert said == "strength 1: the enhancer is no rate point of the registry (all of its change); temperature 0.5 as given"
    assert reg.operating_point(sha, 0.1, 0.2).describe() == "temperature 0.1 and strength 0.2 (as given)"


def test_product_version_names_models_and_parameters():
    from flows.identity import ModelRef, product_paths, product_version
    from flows.options import ProcessOptions

    codec = ModelRef("elic-0032", "c.pt", "a" * 64, {})
    e1 = ModelRef("inn-demo", "e.pt", "b" * 64, {})
    e2 = ModelRef("inn-demo", "e2.pt", "c" * 64, {})
    base = ProcessOptions(temperature=1.0, strength=1.0)  # the operating point is decided before a version is named
    v = product_version(codec, e1, base)
    assert v == "elic-0032-aaaaaaaa-mosaic__inn-demo-bbbbbbbb-s0-t1-h32"  # the default: synthesis over the mosaic
    # tile-wise products keep the names they had before the mosaic mode, so they stay found (and complete)
    tile = ProcessOptions(temperature=1.0, strength=1.0, decode_mode="tile")
    assert product_version(codec, e1, tile) == "elic-0032-aaaaaaaa__inn-demo-bbbbbbbb-s0-t1-h32"
    assert product_version(codec, e2, base) != v  # another checkpoint under the same name
    assert product_version(codec, e1, ProcessOptions(seed=1, temperature=1.0, strength=1.0)) != v
    assert product_version(codec, e1, ProcessOptions(temperature=0.5, strength=1.0)) != v
    # a strength below 1 is named; at 1 the name is the one products had before the knob
    assert (product_version(codec, e1, ProcessOptions(temperature=1.0, strength=0.85))
            == "elic-0032-aaaaaaaa-mosaic__inn-demo-bbbbbbbb-s0-t1-a0p85-h32")
    with pytest.raises(ValueError, match="operating point must be decided"):
        product_version(codec, e1, ProcessOptions(temperature=1.0))
    assert product_version(codec, e1, ProcessOptions(tiles_per_batch=3, temperature=1.0, strength=1.0)) == v
    assert product_version(codec, None, base).endswith("__decoded-only")
    p = product_paths("/out", "pass 7/b", v)
    assert p.product == Path(f"/out/pass-7-b/{v}.zarr") and p.metrics.name == f"{v}.metrics.parquet"


class _Fut:
    """A stand-in Prefect future completed by a thread (the scheduler only uses add_done_callback/result)."""

    def __init__(self, fn):
        self._f: Future = Future()
        threading.Thread(target=self._run, args=(fn,), daemon=True).start()

    def _run(self, fn):
        try:
            self._f.set_result(fn())
        except Exception as exc:  # noqa: BLE001
            self._f.set_exception(exc)

    def add_done_callback(self, cb):
        self._f.add_done_callback(lambda _: cb(self))

    def result(self):
        return self._f.result()


def test_scheduler_respects_dependencies_records_failures_and_stops_on_request():
    from flows.scheduler import BatchScheduler, RunInterrupted
    from tasks.plan import Batch

    batches = [Batch("decode", 0, (0,)), Batch("decode", 1, (1,)),
               Batch("enhance", 0, (0,), frozenset({"decode-00000", "decode-00001"})),
               Batch("enhance", 1, (1,), frozenset({"decode-00001"}))]
    order, lock = [], threading.Lock()

    def submit(b):
        def work():
            with lock:
                order.append(b.key)
            if b.key == "decode-00001":
                raise RuntimeError("worker died")
            return {"ok": b.key}
        return _Fut(work)

    progress = []
    s = BatchScheduler(submit=submit, max_in_flight=1, on_progress=lambda d, t: progress.append((d, t)))
    s.run(batches, already={"decode-00000": {"ok": "earlier run"}})
    assert "decode-00000" not in order  # done by an earlier run: reused, not redone
    assert order.index("decode-00001") < order.index("enhance-00000")
    assert s.failures == {"decode-00001": "RuntimeError: worker died"}
    assert s.results["decode-00000"] == {"ok": "earlier run"} and set(s.results) == {"decode-00000", "enhance-00000",
                                                                                      "enhance-00001"}
    assert progress[0] == (1, 4) and progress[-1] == (4, 4)

    s = BatchScheduler(submit=lambda b: _Fut(lambda: {}), max_in_flight=2, stop_after=1)
    with pytest.raises(RunInterrupted, match="run again"):
        s.run(batches, already={})
    assert 1 <= len(s.results) < 4  # what was in flight finished; nothing new was submitted

    # stopped while the source (a pass still arriving) had more to give, with nothing left pending: interrupted
    fed = iter([[Batch("decode", 0, (0,))], [], [Batch("decode", 1, (1,))], None])
    s = BatchScheduler(submit=lambda b: _Fut(lambda: {}), max_in_flight=2, stop_after=1)
    with pytest.raises(RunInterrupted, match="run again"):
        s.run([], already={}, more=lambda: next(fed), poll_s=0.01)
    assert list(s.results) == ["decode-00000"]


def test_scheduler_runs_the_critical_path_first_and_tells_dask_the_same_order():
    import dask

    from flows.cluster import task_annotations
    from flows.scheduler import BatchScheduler, stage_priority
    from tasks.plan import Batch

    ready = [Batch("enhance", 0, (0,), frozenset({"decode-00000"})), Batch("evaluate", 0, (0,)),
             Batch("synthesize", 0, (0,), frozenset({"decode-00000"})), Batch("decode", 2, (2,)),
             Batch("decode", 1, (1,))]
    order = []
    s = BatchScheduler(submit=lambda b: _Fut(lambda: order.append(b.key) or {}), max_in_flight=1)
    s.run(ready, already={"decode-00000": {}})
    # what the last rows of a pass wait for (decoding, then synthesis) before windows that were ready earlier
    assert order == ["decode-00001", "decode-00002", "synthesize-00000", "enhance-00000", "evaluate-00000"]
    assert [stage_priority(st) for st in ("decode", "synthesize", "enhance", "evaluate")] == [4, 3, 2, 1]
    with task_annotations(False, priority=stage_priority("decode")):
        assert dask.get_annotations() == {"priority": 4}
    with task_annotations(True, priority=2):
        assert dask.get_annotations() == {"priority": 2, "resources": {"GPU": 1}}
    with task_annotations(False):
        assert dask.get_annotations() == {}


def test_a_pass_s_last_records_are_decoded_without_waiting_for_the_in_flight_cap():
    """While enhancement fills ``max_in_flight``, decode batches that arrive are submitted at once (Dask then runs
    them next by priority), not held back until a running window finishes."""
    from flows.scheduler import BatchScheduler
    from tasks.plan import Batch

    release, submitted, finished = threading.Event(), [], []

    def work(key):
        if key.startswith("enhance"):
            release.wait(5)
        finished.append(key)
        return {}

    def submit(b):
        submitted.append((b.key, len(finished)))  # and how many batches had finished by then
        return _Fut(lambda: work(b.key))

    fed = iter([[Batch("enhance", 0, ()), Batch("enhance", 1, ())],
                [Batch("decode", 7, (7,)), Batch("decode", 8, (8,))]])

    def more():
        got = next(fed, None)
        if got is None and any(k == "decode-00007" for k, _ in submitted):
            release.set()  # the enhancement windows finish only once the decode was submitted
        return got

    s = BatchScheduler(submit=submit, max_in_flight=1)
    s.run([], already={}, more=more, poll_s=0.01)
    assert submitted[:2] == [("enhance-00000", 0), ("decode-00007", 0)], submitted  # beside the running window
    assert submitted[2][0] == "decode-00008" and submitted[2][1] >= 1  # decode batches have a cap of their own
    assert set(s.results) == {"enhance-00000", "enhance-00001", "decode-00007", "decode-00008"}


def test_the_stage_priority_reaches_dask_and_orders_what_waits_for_a_worker():
    """Through the same annotation the flow uses, on a real (in-process, one-thread) Dask cluster: a decode task
    submitted after enhancement tasks runs before those still waiting for the worker."""
    import time as _time

    from distributed import Client, LocalCluster

    from flows.cluster import task_annotations
    from flows.scheduler import stage_priority

    def work(name, seconds=0.0):
        _time.sleep(seconds)
        return name, _time.monotonic()  # when it ended (one thread: the order they ran in)

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        futures = [client.submit(work, "blocker", 0.5, pure=False)]
        with task_annotations(False, priority=stage_priority("enhance")):
            futures += [client.submit(work, f"enhance-{i}", pure=False) for i in range(4)]
        with task_annotations(False, priority=stage_priority("decode")):
            futures.append(client.submit(work, "decode", pure=False))
        ran = [name for name, _ in sorted(client.gather(futures), key=lambda r: r[1])]
    assert ran[0] == "blocker" and ran.index("decode") < ran.index("enhance-3"), ran


def test_claims_and_locks_are_exclusive(tmp_path):
    from tasks.state import ExclusiveLock, LockHeld, claim

    src = tmp_path / "p.gsp"
    src.write_bytes(b"x")
    wins = []
    barrier = threading.Barrier(4)

    def grab():
        barrier.wait()
        wins.append(claim(src, tmp_path / "processing"))

    threads = [threading.Thread(target=grab) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(w is not None for w in wins) == 1
    with ExclusiveLock(tmp_path / "l.lock"):
        with pytest.raises(LockHeld):
            ExclusiveLock(tmp_path / "l.lock").acquire()
    ExclusiveLock(tmp_path / "l.lock").acquire().release()  # free again


def test_default_task_runner_is_a_local_cluster_of_two_single_thread_processes():
    from flows.cluster import make_task_runner
    from prefect_dask import DaskTaskRunner

    r = make_task_runner()
    assert isinstance(r, DaskTaskRunner) and r.address is None
    kw = r.cluster_kwargs
    assert (kw["n_workers"], kw["threads_per_worker"], kw["processes"]) == (2, 1, True)
    assert make_task_runner("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


def test_workers_are_warmed_at_once_and_a_checkpoint_they_cannot_load_stops_the_run(dask_cluster, tiny_codec,
                                                                                    tmp_path):
    """The flow loads its models into every worker at once (``warm_workers``) before its first batch; a
    checkpoint a worker cannot load is the operator's error, raised there (before the product is written)
    rather than logged and met again by every batch."""
    from flows.cluster import warm_workers
    from groundstation.fileio import sha256_file

    address = dask_cluster.scheduler_address
    codec = (str(tiny_codec), sha256_file(tiny_codec))
    with warm_workers(address, codec, None) as warming:
        futures = list(warming.futures)
        warming.wait(raise_operator_errors=True)
        done = [f.result() for f in futures]
    assert len(done) == len(dask_cluster.workers) and all(d["loaded"] == ["codec"] for d in done)
    assert len({d["worker"] for d in done}) == len(done)  # one per worker
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError), warm_workers(address, (str(tmp_path / "broken.pt"), "0" * 64), None) as w:
        w.wait(raise_operator_errors=True)
    with warm_workers(address, (str(tmp_path / "broken.pt"), "0" * 64), None) as w:  # the default only logs
        w.wait()


def test_missing_enhancer_fails_clearly(flow_pass, tiny_codec, tmp_path, monkeypatch):
    from flows.identity import resolve_run
    from flows.options import ProcessOptions
    from groundstation import registry
    from groundstation.container import PassReader

    reg = tmp_path / "models.yaml"
    reg.write_text(f"default_codec: tiny\nmodels:\n  tiny:\n    kind: codec\n    path: '{tiny_codec}'\n"
                   f"    sha256: '{'0' * 64}'\n    architecture: elic2022-chandelier\n    arch: {{}}\n")
    monkeypatch.setattr(registry, "load_registry", lambda *a: registry.Registry.model_validate(registry.load_yaml(reg)))
    header = PassReader(flow_pass[1]).header
    with pytest.raises(ConfigError, match="--enhancer NAME .* or --no-enhance"):
        resolve_run(header, ProcessOptions(codec=str(tiny_codec)))
    plan = resolve_run(header, ProcessOptions(codec=str(tiny_codec), enhance=False))
    codec, enh = plan.codec, plan.enhancer
    assert enh is None and codec.sha256 == header.codec.sha256


# ------------------------------------------------------------------------------------------------ flows
@pytest.fixture(scope="module")
def e2e(tmp_path_factory, prefect_harness, dask_cluster, flow_pass, tiny_codec, enhancer_ckpts):
    """One run through the CLI (``gsp process --json``) with a reference scene, on the shared LocalCluster."""
    import contextlib
    import io

    from gsp.cli import main

    scene, passfile = flow_pass
    out = tmp_path_factory.mktemp("e2e")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["process", str(passfile), "-o", str(out), "--reference", str(scene), "--codec", str(tiny_codec),
                     "--enhancer", str(enhancer_ckpts[0]), "--tiles-per-batch", "2", "--temperature", "1",
                     "--dask-address", dask_cluster.scheduler_address, "--json"])
    return {"code": code, "res": json.loads(buf.getvalue()), "out": out, "scene": scene, "pass": passfile}


@pytest.mark.slow
def test_everything_a_run_writes_has_the_users_usual_mode(e2e):
    """Products, metrics, report, markers: readable like any file the operator writes (not mkstemp's 0600)."""
    from helpers import unusual_modes

    assert any(e2e["out"].rglob("*.report.md")) and any(e2e["out"].rglob("*.parquet"))
    assert unusual_modes(e2e["out"]) == []


@pytest.mark.slow
def test_end_to_end_product_metrics_and_artifacts(e2e):
    import rasterio

    from groundstation.metrics import read_parquet
    from groundstation.product import open_product

    res = e2e["res"]
    assert e2e["code"] == 0 and res["status"] == "complete"
    assert res["tiles_total"] == res["tiles_ok"] == TILES and res["tiles_lost"] == 0
    # 3 decode, 2 synthesize (windows of 2x2 tiles over the latent mosaic: the decode mode by default),
    # 3 enhance (6 one-tile windows: the cheapest cores for this scene on 2 workers), 3 evaluate
    assert res["batches"] == {"total": 11, "run": 11, "skipped": 0, "failed": 0}
    assert res["decode"] == {"mode": "mosaic", "synthesis": "float32", "entropy": res["decode"]["entropy"],
                             "core_tiles": 2, "halo_latent": 4,
                             "mosaic_g_s_sha256": None}  # the tiny codec has no tuned g_s in the registry
    product = Path(res["product"])
    assert product.parent == e2e["out"] / "flow-pass-1" and product.name == res["version"] + ".zarr"
    ds = open_product(product)
    with rasterio.open(e2e["scene"]) as src:
        assert ds.decoded.shape == ds.enhanced.shape == (3, src.height, src.width)
        assert ds.rio.crs == src.crs
        assert ds.rio.transform() == src.transform
        mask = src.dataset_mask() > 0
    assert ds.attrs["gsp_status"] == "complete"
    assert (ds.valid.values.astype(bool) == mask).all()
    dec, enh = ds.decoded.values, ds.enhanced.values
    assert not np.array_equal(dec, enh)
    assert (enh[:, ~mask] == 0).all()  # nodata stays nodata
    s = ds.attrs["gsp_summary"]
    assert res["version"] == (f"tiny-pt-{s['codec']['sha256'][:8]}-mosaic__enh-a-pt-{s['enhancer']['sha256'][:8]}"
                              "-s0-t1-h32")
    assert s["decode"]["mode"] == "mosaic"  # provenance
    assert not Path(str(product).replace(".zarr", ".latents")).exists()  # no tile lost: latents not kept

    tiles = read_parquet(res["metrics"])
    assert len(tiles) == 2 * TILES and set(tiles["product"]) == {"decoded", "enhanced"}
    assert (tiles["status"] == "ok").all()
    # every perceptual metric in its own column: LPIPS-Alex (primary), LPIPS-VGG, ST-LPIPS-Alex
    assert tiles["psnr_db"].notna().all() and all(tiles[c].notna().all() for c in ("lpips_alex", "lpips_vgg",
                                                                                    "stlpips_alex"))
    assert tiles["ms_ssim"].isna().all()  # 128-px tiles are below MS-SSIM's 161 px; said in the note
    assert tiles["note"].str.contains("ms_ssim").all()
    assert (tiles["enhance_ms"].notna() == (tiles["product"] == "enhanced")).all()
    assert tiles["bpp"].gt(0).all()
    report = Path(res["report"]).read_text()
    assert "## Damaged tiles" in report and "None: every tile decoded" in report and res["product"] in report
    assert "| MS-SSIM | lpips_alex | lpips_vgg | stlpips_alex |" in report and "(lpips_alex, the paper's, first)" in report
    # what the product waited for after its last tile, step by step, in the summary and the report
    steps = res["timings"]["delivery_s"]
    assert list(steps)[:1] == ["overviews_and_seams"] and {"source_seams", "metrics", "quicklook"} <= set(steps)
    assert all(v >= 0 for v in steps.values()) and "- delivery after the last tile: overviews and seams " in report
    assert (e2e["out"] / "history.parquet").is_file()
    assert not Path(str(product).replace(".zarr", ".state")).exists()
    # the seam ratio of each mosaic and of the reference scene on the same grid, in the summary, the report and
    # the station history
    assert set(res["seam_ratio"]) == {"decoded", "enhanced", "source"}
    assert all(0 < v < 50 for v in res["seam_ratio"].values())
    assert f"decoded {res['seam_ratio']['decoded']:.2f}" in report and f"source {res['seam_ratio']['source']:.2f}" in report
    history = read_parquet(e2e["out"] / "history.parquet").set_index("product")
    assert history.loc["decoded", "seam_ratio"] == res["seam_ratio"]["decoded"]
    assert (history["seam_ratio_source"] == res["seam_ratio"]["source"]).all()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[res["flow_run_id"]])))
        by_type = {a.type: a for a in arts}
        assert sorted(a.type for a in arts) == ["markdown", "progress", "table"]
        assert by_type["table"].key == "gsp-flow-pass-1-tiles" and by_type["progress"].key == "gsp-flow-pass-1-progress"
        table = by_type["table"].data
        table = json.loads(table) if isinstance(table, str) else table
        assert len(table) == 2 * TILES and {"PSNR dB", "LPIPS-Alex", "LPIPS-VGG", "ST-LPIPS", "bpp"} <= set(table[0])
        assert "Damaged tiles" in by_type["markdown"].data
        # the report artifact shows the quicklook inside (a data URI); the report file links the file beside it
        assert "![Quicklook of pass flow-pass-1" in by_type["markdown"].data
        assert "](data:image/jpeg;base64," in by_type["markdown"].data
        assert f"]({Path(res['quicklook']).name})" in report and Path(res["quicklook"]).is_file()
        assert float(by_type["progress"].data) == 100.0
        run = client.read_flow_run(by_type["table"].flow_run_id)
        assert run.state.is_completed() and run.name
        assert run.parameters["options"]["tiles_per_batch"] == 2


@pytest.mark.slow
def test_enhancement_core_size_does_not_change_the_product(e2e, tmp_path, tiny_codec, enhancer_ckpts, dask_cluster):
    """Windows of one tile each (the run's choice for this scene) and of 2x2 tiles give the same enhanced pixels
    up to float rounding: within 1 DN on at most 0.1 % of the values."""
    from flows.process_pass import ProcessOptions, run_process_pass
    from groundstation.product import open_product

    one = run_process_pass(e2e["pass"], tmp_path, ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]),
                                                                 temperature=1.0, core_tiles=2),
                           dask_address=dask_cluster.scheduler_address)
    assert one["enhancer"]["core"] == 256 and e2e["res"]["version"] == one["version"]
    a = open_product(one["product"]).enhanced.values.astype(int)
    b = open_product(e2e["res"]["product"]).enhanced.values.astype(int)
    diff = np.abs(a - b)
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())


@pytest.mark.slow
def test_second_run_with_the_same_models_changes_nothing(e2e, tiny_codec, enhancer_ckpts, dask_cluster):
    from flows.process_pass import ProcessOptions, run_process_pass

    out = e2e["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    res = run_process_pass(e2e["pass"], out, ProcessOptions(reference=str(e2e["scene"]), codec=str(tiny_codec),
                                                            enhancer=str(enhancer_ckpts[0]), temperature=1.0),
                           dask_address=dask_cluster.scheduler_address)
    assert res["status"] == "already-complete" and res["product"] == e2e["res"]["product"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.slow
def test_interrupted_run_is_finished_without_redoing_done_batches(e2e, tmp_path, monkeypatch, dask_cluster, tiny_codec,
                                                                  enhancer_ckpts):
    from flows.process_pass import ProcessOptions, run_process_pass
    from flows.scheduler import STOP_AFTER_ENV, RunInterrupted
    from groundstation.product import open_product, status
    from tasks.state import read_markers

    opts = ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]), tiles_per_batch=1, temperature=1.0)
    monkeypatch.setenv(STOP_AFTER_ENV, "3")
    with pytest.raises(RunInterrupted):
        run_process_pass(e2e["pass"], tmp_path, opts, dask_address=dask_cluster.scheduler_address)
    product = Path(str(tmp_path / "flow-pass-1" / e2e["res"]["version"]) + ".zarr")
    state = product.with_suffix(".state")
    assert status(product) == "incomplete"
    done = {f"{s}-{i:05d}" for s in ("decode", "synthesize", "enhance") for i in read_markers(state, s)}
    planned = 2 * TILES + 2  # one-tile decode and enhance batches, two synthesis windows of 2x2 tiles
    assert 3 <= len(done) < planned
    stamps = {p.name: p.stat().st_mtime_ns for p in state.glob("*.json")}

    monkeypatch.delenv(STOP_AFTER_ENV)
    seen = {}
    import tasks.state as st

    real = st.read_markers

    def spy(state_dir, stage):  # the markers as the second run finds them, before it removes the state folder
        out = real(state_dir, stage)
        seen.update({p.name: p.stat().st_mtime_ns for p in Path(state_dir).glob(f"{stage}-*.json")})
        return out

    monkeypatch.setattr("flows.stages.read_markers", spy)
    res = run_process_pass(e2e["pass"], tmp_path, opts, dask_address=dask_cluster.scheduler_address)
    assert res["status"] == "complete" and res["tiles_ok"] == TILES
    assert res["batches"]["total"] == planned
    assert res["batches"]["skipped"] == len(done) and res["batches"]["run"] == planned - len(done)
    assert {k: seen[k] for k in stamps} == stamps  # the first run's markers were reused untouched
    assert not state.exists()
    # the resumed product holds exactly the bytes of a one-shot run (seeded latent, whole-chunk writes)
    a, b = open_product(product), open_product(e2e["res"]["product"])
    assert np.array_equal(a.decoded.values, b.decoded.values)
    assert np.array_equal(a.enhanced.values, b.enhanced.values)
    assert np.array_equal(a.valid.values, b.valid.values)


@pytest.mark.slow
def test_a_worker_crash_costs_its_batch_not_the_flow(tmp_path, monkeypatch, prefect_harness, dask_cluster, flow_pass,
                                                     tiny_codec, enhancer_ckpts):
    from distributed import Client

    from flows.process_pass import ProcessOptions, run_process_pass
    from groundstation.errors import EXIT_TILES_LOST
    from groundstation.metrics import read_parquet
    from groundstation.product import open_product
    from helpers import CrashOnTiles

    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.register_plugin(CrashOnTiles([5]))  # the worker decoding tile 5 dies with SIGSEGV
        try:
            res = run_process_pass(flow_pass[1], tmp_path, ProcessOptions(
                codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]), tiles_per_batch=2),
                dask_address=dask_cluster.scheduler_address)
        finally:
            client.unregister_worker_plugin(CrashOnTiles.name)
    assert res["status"] == "complete" and res["exit_code"] == EXIT_TILES_LOST
    assert [(d["tile"], d["reason"]) for d in res["lost"]] == [(4, "decode_error"), (5, "decode_error")]
    assert "KilledWorker" in res["lost"][0]["detail"]
    ds = open_product(res["product"])
    # tile 4 was decoded before the crash: masked and zeroed all the same, and never enhanced
    assert not ds.valid.values[128:, 128:].any() and not ds.decoded.values[:, 128:, 128:].any()
    assert not ds.enhanced.values[:, 128:, 128:].any() and ds.enhanced.values[:, :128, :128].any()
    assert ds.valid.values[:128].any() and ds.valid.values[128:, :128].any()
    tiles = read_parquet(res["metrics"])
    assert list(tiles.loc[tiles["status"] != "ok", "tile_index"]) == [4, 4, 5, 5]  # decoded and enhanced rows
    assert math.isnan(tiles.loc[tiles["tile_index"] == 5, "decode_ms"].iloc[0])
    assert "tiles 4, 5" in Path(res["report"]).read_text()
