"""The retransmission round trip: a pass with lost tiles, then a supplement resending them (``gsp encode
--supplement-of PASS --tiles``) applied through the inbox watcher completes the product exactly as a one-shot
run of the undamaged pass; refusals (unknown pass, duplicate, other codec) change nothing."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import make_pass
from product_helpers import lose_tiles

LOST = (0, 4)  # 256x512 scene, 128 px tiles: 2x4 tiles; the first column is lost


def _cli(*argv) -> tuple[int, str, str]:
    from gsp.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, argv)))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sup_pass(tmp_path_factory, tiny_codec):
    folder = tmp_path_factory.mktemp("suppass")
    scene, full = make_pass(folder, tiny_codec, "sup-pass", height=256, width=512)
    damaged = lose_tiles(full, LOST, folder / "sup-pass-damaged.gsp")
    return {"folder": folder, "scene": scene, "full": full, "damaged": damaged}


# ------------------------------------------------------------------------------------------------ format + encode
def test_a_full_pass_header_has_no_supplement_field_and_a_supplement_header_is_checked():
    from pydantic import ValidationError

    from groundstation.container import PassHeader, SupplementInfo

    with pytest.raises(ValidationError, match="increasing order"):
        SupplementInfo(tiles=[3, 3], sent="2024-05-01T10:00:00+00:00")
    with pytest.raises(ValidationError):
        SupplementInfo(tiles=[], sent="2024-05-01T10:00:00+00:00")
    assert "supplement" in PassHeader.model_fields and PassHeader.model_fields["supplement"].default is None


def test_encode_supplement_writes_the_pass_header_and_only_the_listed_records(sup_pass, tiny_codec, tmp_path):
    from groundstation.container import PassReader

    out = tmp_path / "sup.gsp"
    code, stdout, _ = _cli("encode", sup_pass["scene"], "-o", out, "--supplement-of", sup_pass["damaged"],
                           "--tiles", "4,0", "--codec", tiny_codec)
    assert code == 0 and "supplement of pass sup-pass" in stdout
    full, sup = PassReader(sup_pass["full"]), PassReader(out)
    assert b'"supplement"' not in sup_pass["full"].read_bytes()[:4096]  # full passes: the header as before
    assert sup.header.supplement.tiles == [0, 4]
    assert sup.header.model_copy(update={"supplement": None}) == full.header  # same uid, grid, codec, bands
    assert sorted(sup.scan().records) == [0, 4] and sup.scan().trailer
    for t in LOST:  # the very records the full pass carried (same codec, threads, entropy mode, band rule)
        a, b = full.read(t), sup.read(t)
        assert (a.strings, a.witness, a.mask) == (b.strings, b.witness, b.mask)
    code, _, _ = _cli("inspect", out)
    assert code == 0  # the tiles it does not carry are not lost


def test_a_supplement_is_never_processed_as_a_pass(sup_pass, tiny_codec, enhancer_ckpts, tmp_path):
    from flows.identity import preflight
    from flows.options import ProcessOptions
    from flows.reprocess import select_passes
    from groundstation.encode import encode_supplement
    from groundstation.errors import ProductError

    archive = tmp_path / "archive"
    archive.mkdir()
    sup = encode_supplement(sup_pass["scene"], archive / "resend.gsp", sup_pass["damaged"], [4],
                            codec=str(tiny_codec)).path
    with pytest.raises(ProductError, match="resend.gsp is a supplement .*tiles 4 of pass sup-pass"):
        preflight(sup, ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0])))
    passes, notes = select_passes(archive)
    assert passes == [] and "a supplement of pass sup-pass" in notes[0]
    code, _, err = _cli("supplement", sup, "--products", tmp_path / "products")  # refused before any cluster
    assert code == 2 and "supplement of an unknown pass" in err and "Traceback" not in err
    assert not (tmp_path / "products").exists()


@pytest.mark.parametrize("argv, message", [
    (["--supplement-of", "{damaged}", "--tiles", "3,8"], "--tiles 8: outside 0..7"),
    (["--supplement-of", "{damaged}", "--tiles", "-1"], "tile indices start at 0"),
    (["--supplement-of", "{damaged}", "--tiles", "a,b"], "give tile indices like 3,7"),
    (["--tiles", "3"], "--tiles and --supplement-of go together"),
    (["--supplement-of", "{damaged}", "--tiles", "3", "--tile-size", "64"], "--tile-size: a supplement takes"),
])
def test_encode_tiles_errors_are_clear(sup_pass, tiny_codec, tmp_path, argv, message):
    argv = [a.format(damaged=sup_pass["damaged"]) for a in argv]
    code, _, err = _cli("encode", sup_pass["scene"], "-o", tmp_path / "x.gsp", "--codec", tiny_codec, *argv)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "x.gsp").exists()


# ------------------------------------------------------------------------------------------------ round trip
def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _rewrite(src: Path, dest: Path, **update) -> Path:
    """``src`` with its header changed (records re-framed with the header's uid)."""
    from groundstation.container import PassReader, PassWriter

    reader = PassReader(src)
    header = reader.header.model_copy(update=update)
    with PassWriter(dest, header) as w:
        for rec in reader:
            w.write(rec)
    return dest


@pytest.mark.slow
def test_supplement_through_the_inbox_completes_the_product_as_a_one_shot_run(
        sup_pass, tmp_path, prefect_harness, dask_cluster, tiny_codec, enhancer_ckpts):
    from flows.inbox import run_sweep
    from flows.process_pass import ProcessOptions, run_process_pass
    from groundstation.errors import EXIT_TILES_LOST
    from groundstation.container import PassReader
    from groundstation.metrics import read_parquet
    from groundstation.product import open_product, status
    from groundstation.stac import lost_path
    from groundstation.synthesis import TileGrid, latent_store_path, synthesis_windows, windows_reading
    from tasks.plan import enhancement_windows, tiles_in_box

    opts = ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]), tiles_per_batch=1,
                          temperature=1.0, reference=str(sup_pass["scene"]), cog=True)
    addr = dask_cluster.scheduler_address
    one_shot = run_process_pass(sup_pass["full"], tmp_path / "oneshot", opts, dask_address=addr)
    assert one_shot["exit_code"] == 0

    products = tmp_path / "products"
    first = run_process_pass(sup_pass["damaged"], products, opts, dask_address=addr)
    assert first["exit_code"] == EXIT_TILES_LOST and [d["tile"] for d in first["lost"]] == list(LOST)
    product = Path(first["product"])
    assert lost_path(product).is_file()
    # complete with its lost tiles stated (gsp_tiles_lost), hatched on its quicklook
    assert status(product) == "complete" and open_product(product).attrs["gsp_tiles_lost"] == len(LOST)
    quicklook_before = Path(first["quicklook"]).read_bytes()
    enhanced_before = _mtimes(product / "enhanced")
    decoded_before = _mtimes(product / "decoded")
    cog_before = Path(first["cog"]).stat().st_mtime_ns

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    code, _, err = _cli("encode", sup_pass["scene"], "-o", inbox / "sup-pass.resend.gsp", "--supplement-of",
                        sup_pass["damaged"], "--tiles", ",".join(map(str, LOST)), "--codec", tiny_codec)
    assert code == 0, err
    sweep = run_sweep(inbox, products, ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[1])),
                      dask_address=addr, settle_s=0)
    assert [(r["pass"], r["status"], r.get("supplement")) for r in sweep] == [("sup-pass.resend.gsp", "done", True)], sweep
    assert sweep[0]["exit_code"] == 0 and sweep[0]["tiles_lost"] == 0 and sweep[0]["product"] == str(product)
    assert (inbox / "done" / "sup-pass.resend.gsp").is_file()

    # ---- complete, same version, the pixels of the one-shot run
    assert status(product) == "complete"
    a, b = open_product(product), open_product(one_shot["product"])
    s = a.attrs["gsp_summary"]
    assert s["version"] == one_shot["version"] == first["version"]  # the inbox's other enhancer was not used
    assert s["tiles_ok"] == 8 and s["tiles_lost"] == 0 and s["lost"] == [] and s["exit_code"] == 0
    assert a.attrs["gsp_tiles_lost"] == 0 and Path(s["quicklook"]).read_bytes() != quicklook_before  # redrawn
    valid = a.valid.values.astype(bool)
    assert np.array_equal(valid, b.valid.values.astype(bool))
    assert valid[20:].all() and valid[:, 30:].all() and not valid[:20, :30].any()  # all but the scene's nodata box
    assert np.array_equal(a.decoded.values, b.decoded.values)
    # the same windows, one per batch as in the one-shot run: the same bytes (the project tolerates 1 DN of
    # float rounding where the batching differs, test_flows_process.py)
    assert np.array_equal(a.enhanced.values, b.enhanced.values)

    # ---- decode mode mosaic: the synthesis windows that read a resent tile were redone (their cores' pixels
    # near the resent tiles change); then only the enhancement windows whose read box touches a tile whose
    # decoded pixels changed were recomputed
    header = PassReader(sup_pass["full"]).header
    entry = s["supplements"][-1]
    synth = synthesis_windows(TileGrid.from_header(header))
    repainted = sorted({t for w in windows_reading(synth, LOST) for t in w.core_tiles})
    assert entry["tiles_resynthesised"] == repainted and set(LOST) <= set(repainted) < set(range(8))
    t = header.tiling.tile_size
    touched = {k for k, v in _mtimes(product / "decoded").items() if decoded_before.get(k) != v}
    assert touched - {".zattrs", ".zarray"} == {f"0.{i // 4}.{i % 4}" for i in repainted}  # the others: untouched
    core = s["enhancer"]["core"] // header.tiling.tile_size
    windows = enhancement_windows(header, opts.halo, core)
    expected = [i for i, w in enumerate(windows) if set(tiles_in_box(header, w.read)) & set(repainted)]
    assert entry["windows_recomputed"] == expected and 0 < len(expected) <= len(windows)
    assert entry["tiles_ok"] == list(LOST) and entry["name"] == "sup-pass.resend.gsp" and entry["sent"]
    assert a.attrs["gsp_supplements"] == s["supplements"] and a.attrs.get("gsp_supplement_pending") is None
    after = _mtimes(product / "enhanced")
    touched = {k for k, v in after.items() if enhanced_before.get(k) != v}
    cores = {f"0.{r}.{c}" for i in expected for r in range(windows[i].core.y0 // t, (windows[i].core.y1 - 1) // t + 1)
             for c in range(windows[i].core.x0 // t, (windows[i].core.x1 - 1) // t + 1)}
    assert touched - {".zattrs", ".zarray"} == cores  # the other windows' chunks were left as they were

    # ---- metrics, report, STAC, lost tiles, COG
    tiles = read_parquet(s["metrics"])
    assert len(tiles) == 16 and (tiles["status"] == "ok").all() and tiles["psnr_db"].notna().all()
    ref = read_parquet(one_shot["metrics"])
    assert np.allclose(tiles.sort_values(["tile_index", "product"])["psnr_db"].to_numpy(),
                       ref.sort_values(["tile_index", "product"])["psnr_db"].to_numpy(), atol=0.05)
    report = Path(s["report"]).read_text()
    assert "None: every tile decoded" in report and "sup-pass.resend.gsp" in report
    import json

    item = json.loads(Path(s["stac_item"]).read_text())
    assert item["properties"]["gsp:tiles_lost"] == 0 and item["properties"]["gsp:supplements"][0]["tiles_ok"] == [0, 4]
    assert not lost_path(product).exists()
    # the latent store was kept while tiles were lost (the supplement re-synthesised from it); not any more
    assert not latent_store_path(product).exists()
    assert Path(s["cog"]).stat().st_mtime_ns != cog_before
    import rasterio

    with rasterio.open(s["cog"]) as ds, rasterio.open(one_shot["cog"]) as ds1:
        assert np.array_equal(ds.dataset_mask(), ds1.dataset_mask())
    history = read_parquet(products / "history.parquet")
    assert len(history[history["pass_id"] == "sup-pass"]) == 2  # one row per product (decoded, enhanced)

    # ---- refusals: unknown pass, duplicate, other codec -> failed/ with the reason; nothing changed
    sent = inbox / "done" / "sup-pass.resend.gsp"
    shutil.copy(sent, inbox / "dup.gsp")
    _rewrite(sent, inbox / "unknown.gsp", pass_uid="f" * 32)
    _rewrite(sent, inbox / "othercodec.gsp", codec=header.codec.model_copy(update={"sha256": "0" * 64}))
    before = _mtimes(products)
    sweep = run_sweep(inbox, products, opts, dask_address=addr, settle_s=0)
    assert sorted((r["pass"], r["status"]) for r in sweep) == [
        ("dup.gsp", "failed"), ("othercodec.gsp", "failed"), ("unknown.gsp", "failed")]
    errors = {r["pass"]: r["error"] for r in sweep}
    assert "duplicate supplement" in errors["dup.gsp"]
    assert "unknown pass" in errors["unknown.gsp"]
    assert "different codec" in errors["othercodec.gsp"]
    for name in errors:
        assert (inbox / "failed" / name).is_file() and (inbox / "failed" / f"{name}.error.txt").is_file()
    assert _mtimes(products) == before
