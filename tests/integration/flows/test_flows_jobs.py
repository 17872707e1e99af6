"""Training and evaluation as Prefect flows (gsp.jobs) on the test harness: a few steps on tiny data, the
progress, table and markdown artifacts, a rerun that continues from the checkpoint, the export and its model
card, and the station's roots held for every path parameter."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from synth import TINY_ARCH, write_pngs

pytestmark = pytest.mark.slow


@pytest.fixture
def station(tmp_path, monkeypatch):
    """A station whose roots are in force for every run (``enforce: always``), so the flows' path checks run
    here as they do for a run started from a deployment."""
    home = tmp_path / "st"
    for name in ("archive", "runs", "weights"):
        (home / name).mkdir(parents=True)
    (tmp_path / "station.yaml").write_text(f"station: jobs-station\nroots:\n  home: {home}\n  enforce: always\n")
    monkeypatch.setenv("GSP_STATION", str(tmp_path / "station.yaml"))
    return home


def _artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        run = client.read_flow_run(flow_run_id)
    out = {}
    for a in arts:
        data = a.data
        if a.type == "table" and isinstance(data, str):
            data = json.loads(data)
        out.setdefault(a.type, []).append((a.key, data))
    return {"run": run, **out}


def _steps(csv_path: Path) -> list[int]:
    with open(csv_path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_train_codec_flow_publishes_its_run_and_a_rerun_continues(prefect_harness, station):
    from gsp.jobs import CodecTrainOptions, train_codec_job

    images = write_pngs(station / "archive" / "images", [(f"i{k}", (80, 96), k) for k in range(2)])
    out = station / "runs" / "codec-a"
    opts = CodecTrainOptions(N=TINY_ARCH.N, M=TINY_ARCH.M, groups=list(TINY_ARCH.groups), steps=2, batch_size=2,
                             crop=64, checkpoint_every=1, threads=1)
    first = train_codec_job(data=[str(images)], out=str(out), options=opts)
    assert (first["start_step"], first["step"], first["steps"]) == (0, 2, 2)
    arts = _artifacts(first["flow_run_id"])
    assert arts["run"].name == "images -> codec-a" and "station:jobs-station" in arts["run"].tags
    assert [k for k, _ in arts["progress"]] == ["gsp-train-codec-codec-a-progress"]
    assert float(arts["progress"][0][1]) == 100.0
    (key, table), = arts["table"]
    assert key == "gsp-train-codec-codec-a-loss" and [r["step"] for r in table] == [1, 2]
    assert {"loss", "bpp", "psnr_db"} <= set(table[0])
    (key, md), = arts["markdown"]
    assert key == "gsp-train-codec-codec-a-report" and "started at step 0, now at step 2 of 2" in md

    # the same run folder with more steps: resumed from last.pt at step 2, not restarted; then exported
    export = station / "weights" / "codec-a.pt"
    second = train_codec_job(data=[str(images)], out=str(out), options=opts.model_copy(update={"steps": 3}),
                             export=str(export))
    assert (second["start_step"], second["step"]) == (2, 3)
    assert _steps(out / "loss.csv") == [1, 2, 3]
    arts = _artifacts(second["flow_run_id"])
    assert [r["step"] for r in arts["table"][0][1]] == [1, 2, 3]
    assert "resumed at step 2, now at step 3 of 3" in arts["markdown"][0][1]
    from groundstation.codec import load_codec

    assert load_codec(export).sha256 == second["sha256"]
    card = Path(second["card"]).read_text()
    assert second["card"] == str(export.with_suffix(".md"))
    assert "Model card: `codec-a` (codec)" in card and second["sha256"] in card and "3 steps" in card

    # other options in the same folder are refused with what to do, nothing changed
    from groundstation.errors import ConfigError

    with pytest.raises(ConfigError, match="other options"):
        train_codec_job(data=[str(images)], out=str(out), options=opts.model_copy(update={"steps": 4, "lr": 1e-3}))
    assert _steps(out / "loss.csv") == [1, 2, 3]


def test_job_paths_outside_the_roots_are_refused_before_the_run_starts(prefect_harness, station, tmp_path):
    from gsp.jobs import CodecTrainOptions, EnhancerTrainOptions, evaluate_job, train_codec_job

    images = write_pngs(station / "archive" / "images", [("i0", (64, 64), 0)])
    state = train_codec_job(data=[str(images)], out=str(tmp_path / "elsewhere"), return_state=True)
    assert state.is_failed() and "outside the station's roots" in state.message
    assert not (tmp_path / "elsewhere").exists()
    state = evaluate_job(images=str(tmp_path), out=str(station / "runs" / "ev"), return_state=True)
    assert state.is_failed() and "images" in state.message and "outside the station's roots" in state.message
    from groundstation.roots import PathNotAllowed

    with pytest.raises(PathNotAllowed, match="options.init .* outside the station's roots"):
        EnhancerTrainOptions(init=str(tmp_path / "start.pt"))
    with pytest.raises(PathNotAllowed, match="init_from .* outside the station's roots"):
        CodecTrainOptions(init_from=str(tmp_path / "last.pt"))


def test_train_enhancer_flow_resumes_and_exports_with_a_model_card(prefect_harness, station, tiny_codec):
    from gsp.jobs import EnhancerTrainOptions, train_enhancer_job
    from gsp.training.pairs import make_pairs

    images = write_pngs(station / "archive" / "images", [(f"i{k}", (64, 64), k) for k in range(4)])
    pairs = station / "runs" / "pairs"
    make_pairs([images], pairs, str(tiny_codec))
    out = station / "runs" / "enh-a"
    opts = EnhancerTrainOptions(arch="2,8,8", steps=2, batch_size=2, crop=32, perceptual="none", threads=1,
                                checkpoint_every=1)
    first = train_enhancer_job(pairs=str(pairs), out=str(out), options=opts)
    assert (first["start_step"], first["step"]) == (0, 2) and first["perceptual"] is None
    arts = _artifacts(first["flow_run_id"])
    assert arts["run"].name == "pairs -> enh-a"
    assert float(arts["progress"][0][1]) == 100.0
    assert [r["step"] for r in arts["table"][0][1]] == [1, 2] and "l_en" in arts["table"][0][1][0]
    assert "started at step 0" in arts["markdown"][0][1]

    export = station / "weights" / "enh-a.pt"
    second = train_enhancer_job(pairs=str(pairs), out=str(out), options=opts.model_copy(update={"steps": 3}),
                                export=str(export))
    assert (second["start_step"], second["step"]) == (2, 3)
    assert _steps(out / "loss.csv") == [1, 2, 3]
    from enhancer.checkpoint import load_enhancer

    assert load_enhancer(export, second["sha256"])[2] == second["sha256"]
    assert json.loads((out / "export.json").read_text())["step"] == 3
    card = export.with_suffix(".md").read_text()
    assert "Model card: `enh-a` (enhancer)" in card and "2 blocks" in card and second["sha256"] in card
    md = _artifacts(second["flow_run_id"])["markdown"][0][1]
    assert "resumed at step 2" in md and str(export) in md


def test_evaluate_flow_publishes_the_table_and_resumes(prefect_harness, station, tiny_codec, enhancer_ckpts,
                                                       monkeypatch):
    import groundstation.registry as registry_mod
    from groundstation.fileio import sha256_file
    from groundstation.registry import Registry
    from gsp.jobs import evaluate_job

    def entry(kind, path, **extra):
        return {"kind": kind, "path": str(path), "sha256": sha256_file(path), "architecture": kind, "arch": {},
                **extra}

    reg = Registry.model_validate({
        "default_codec": "c", "models": {"c": entry("codec", tiny_codec, lmbda=0.01),
                                         "e": entry("enhancer", enhancer_ckpts[0], codec="c")},
        "rate_points": {"p1": {"codec": "c", "enhancer": "e", "temperature": 0.5}}})
    monkeypatch.setattr(registry_mod, "load_registry", lambda *a, **k: reg)
    images = write_pngs(station / "archive" / "val", [("a", (64, 64), 0), ("b", (64, 80), 1)])
    out = station / "runs" / "eval-a"
    res = evaluate_job(images=str(images), out=str(out))
    assert (res["images"], res["computed"], res["skipped"], res["rate_points"]) == (2, 2, 0, ["p1"])
    arts = _artifacts(res["flow_run_id"])
    assert arts["run"].name == "val -> eval-a"
    assert float(arts["progress"][0][1]) == 100.0
    (key, table), = arts["table"]
    assert key == "gsp-evaluate-eval-a-evaluation"
    assert [(r["rate_point"], r["product"]) for r in table] == [("p1", "decoded"), ("p1", "enhanced")]
    assert all(r["bpp"] > 0 and r["psnr_db"] > 0 for r in table)
    (key, md), = arts["markdown"]
    assert key == "gsp-evaluate-eval-a-report" and "# Evaluation on" in md and "2 image evaluations computed" in md

    # a rerun resumes from per_image.csv; with a sweep (a form's nested options, as the UI sends them)
    again = evaluate_job(images=str(images), out=str(out),
                         sweep={"temperatures": [0.0], "noise": [], "unsharp": [], "vgg": "none"})
    assert (again["computed"], again["skipped"]) == (0, 2) and again["sweep"]["skipped"] == 0
    arts = _artifacts(again["flow_run_id"])
    tables = dict(arts["table"])
    assert sorted(tables) == ["gsp-evaluate-eval-a-evaluation", "gsp-evaluate-eval-a-sweep"]
    assert {r["rate_point"] for r in tables["gsp-evaluate-eval-a-sweep"]} == {"p1"}
    assert sorted(k for k, _ in arts["progress"]) == ["gsp-evaluate-eval-a-progress",
                                                      "gsp-evaluate-eval-a-sweep-progress"]
    assert "0 image evaluations computed, 2 already there" in arts["markdown"][0][1]
    assert Path(again["files"]["sweep_csv"]).is_file()

    # the sweep alone (--sweep-only) into a fresh folder: no evaluation table, the sweep's means published instead
    only = evaluate_job(images=str(images), out=str(station / "runs" / "eval-b"),
                        sweep={"temperatures": [0.0], "strengths": [0.5], "noise": [3.0], "unsharp": [], "vgg": "none",
                               "only": True})
    assert only["computed"] == 0 and only["sweep"]["computed"] == 2 * 4 and "csv" not in only["files"]
    assert only["images"] == 2
    assert not (station / "runs" / "eval-b" / "per_image.csv").exists()
    arts = _artifacts(only["flow_run_id"])
    assert {r["variant"] for r in dict(arts["table"])["gsp-evaluate-eval-b-evaluation"]} == \
        {"decoded", "enhanced:T=0.5", "enhanced:T=0:a=0.5", "noise:3"}
    assert "the sweep only (8 rows computed" in arts["markdown"][0][1]


def test_export_flow_writes_the_cog_beside_the_product_and_its_stac_item(prefect_harness, station, tiny_codec):
    """export-product (the UI's way to `gsp export`): the COG beside the product, valid (rio-cogeo), listed in
    the Item it writes; a product outside the products root is refused before anything is written."""
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from groundstation.stac import cog_path, item_path
    from gsp.jobs import export_job
    from product_helpers import decoded_product

    made = decoded_product(station / "products" / "p1", tiny_codec, lose=(1,))
    res = export_job(product=str(made["product"]))
    cog = cog_path(made["product"], "decoded")
    assert res["cog"]["path"] == str(cog) and cog_validate(str(cog))[0]
    with rasterio.open(cog) as ds, rasterio.open(made["scene"]) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
    item = json.loads(item_path(made["product"]).read_text())
    assert any(a["href"].endswith(cog.name) for a in item["assets"].values())

    outside = decoded_product(station.parent / "elsewhere", tiny_codec, name="q")
    state = export_job(product=str(outside["product"]), return_state=True)
    assert state.is_failed() and "products" in str(state.message)
    assert not cog_path(outside["product"], "decoded").exists()
