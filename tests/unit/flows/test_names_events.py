"""Names a person can read (runs after pass and product version, tasks after stage and batch) and the events
automations react to."""

from __future__ import annotations

import json
import math

import pandas as pd

from helpers import make_pass


def test_task_runs_are_named_after_stage_and_batch():
    from flows.names import batch_task_name

    assert batch_task_name("decode-tiles", 3) == "decode-tiles-b0003"
    assert batch_task_name("decode-tiles", 3).rsplit("-", 1)[0] == "decode-tiles"  # the stage, as before


def test_the_run_name_is_the_pass_and_the_version_the_flow_writes(tmp_path, tiny_codec, enhancer_ckpts):
    from flows.names import pass_label
    from flows.identity import product_version, resolve_run, with_operating_point
    from flows.options import ProcessOptions
    from groundstation.container import PassReader

    _, p = make_pass(tmp_path, tiny_codec, "name-pass-7", height=64, width=64)
    header = PassReader(p).header
    for opts in (ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[0]), seed=3),
                 ProcessOptions(codec=str(tiny_codec), enhancer=str(enhancer_ckpts[1]), temperature=0.25),
                 ProcessOptions(codec=str(tiny_codec), enhance=False)):
        plan = resolve_run(header, opts)
        codec, enh = plan.codec, plan.enhancer
        version = product_version(codec, enh, with_operating_point(opts, enh))
        name, tags = pass_label(str(p), opts)
        assert name == f"name-pass-7 @ {version}"
        assert tags == ["station:demo-station", "codec:tiny.pt",
                        f"enhancer:{enh.name}" if enh else "enhancer:none"]


def _summary(lost):
    return {"pass_id": "p-1", "pass_uid": "abc", "pass": "/in/p-1.gsp", "version": "v", "product": "/o/p-1/v.zarr",
            "metrics": "/o/p-1/v.metrics.parquet", "report": "/o/p-1/v.report.md", "tiles_total": 6,
            "tiles_ok": 6 - len(lost), "tiles_lost": len(lost), "lost": lost, "bpp": 0.25,
            "timings": {"total_s": 3.5, "decode_ms_sum": float("nan")}}


def test_events_carry_the_retransmission_list_and_the_products_paths_and_metrics():
    from prefect.events import Event

    from flows.events import PASS_TILES_LOST, PRODUCT_COMPLETE, pass_events

    passes = pd.DataFrame([{"pass_id": "p-1", "product": "decoded", "product_version": "v", "status": "partial",
                            "bpp": 0.25, "psnr_db": 27.5, "ms_ssim": math.nan, "n_tiles": 6},
                           {"pass_id": "p-1", "product": "enhanced", "product_version": "v", "status": "partial",
                            "bpp": 0.25, "psnr_db": 27.0, "ms_ssim": 0.9, "n_tiles": 6}])
    lost = [{"tile": 3, "reason": "crc_mismatch", "detail": "x" * 500}, {"tile": 5, "reason": "missing",
                                                                        "detail": ""}]
    events = pass_events(_summary(lost), passes, station="st-1")
    assert [e[0] for e in events] == [PASS_TILES_LOST, PRODUCT_COMPLETE]
    _, resource, related, payload = events[0]
    assert resource["prefect.resource.id"] == "gsp.pass.p-1" and resource["gsp.station"] == "st-1"
    assert [(r["tile"], r["reason"]) for r in payload["retransmission"]] == [(3, "crc_mismatch"), (5, "missing")]
    assert len(payload["retransmission"][0]["detail"]) == 200 and related[0]["prefect.resource.role"] == "product"
    _, resource, _, payload = events[1]
    assert resource["prefect.resource.id"] == "gsp.product.p-1.v"
    assert payload["paths"]["report"] == "/o/p-1/v.report.md" and payload["paths"]["metrics"].endswith(".parquet")
    assert payload["metrics"]["enhanced"]["psnr_db"] == 27.0 and payload["metrics"]["decoded"]["ms_ssim"] is None
    assert payload["timings"]["decode_ms_sum"] is None
    for name, resource, related, payload in events:
        json.dumps(payload, allow_nan=False)
        Event(event=name, resource=resource, related=related, payload=payload)  # what emit_event builds
    assert [e[0] for e in pass_events(_summary([]), None, station="st-1")] == [PRODUCT_COMPLETE]


def test_the_ui_tile_table_is_short_and_leads_with_tile_product_status():
    """Readable in the UI: no column repeated on every row (the version is in the run's name and report), no
    column empty on every row (quality without a reference scene), no footprints (they stay in the Parquet)."""
    import pandas as pd

    from flows.report import tile_table_rows

    tiles = pd.DataFrame({"pass_id": ["p", "p"], "tile_index": [0, 1], "product": ["decoded", "enhanced"],
                          "product_version": ["v" * 70] * 2, "compressed_bytes": [252, 252], "bpp": [0.1, 0.2],
                          "mse": [1.0, 2.0], "psnr_db": [float("nan")] * 2, "decode_ms": [2711.0978, 1629.07],
                          "enhance_ms": [float("nan"), 1486.74], "device": ["cpu", "cpu"], "status": ["ok", "ok"],
                          "note": ["", ""], "lon_min": [1.0, 1.0]})
    rows = tile_table_rows(tiles)
    assert list(rows[0]) == ["tile", "product", "status", "bytes", "bpp", "decode ms", "enhance ms"]
    assert rows[1] == {"tile": 1, "product": "enhanced", "status": "ok", "bytes": 252, "bpp": 0.2, "decode ms": 1629,
                       "enhance ms": 1487}
    assert rows[0]["enhance ms"] is None
    # with a reference scene: the quality columns under short names; a device that varies and notes stay
    tiles = tiles.assign(psnr_db=[30.123456, 31.0], ms_ssim=[0.9, 0.95], lpips_alex=[0.2, 0.1],
                         device=["cpu", "cuda:0"], note=["", "MS-SSIM: tile below 161 px"])
    columns = list(tile_table_rows(tiles)[0])
    assert columns[:3] == ["tile", "product", "status"] and set(columns[3:]) == {
        "bytes", "bpp", "PSNR dB", "MS-SSIM", "LPIPS-Alex", "decode ms", "enhance ms", "device", "note"}


def test_the_serve_console_says_one_line_per_product():
    from flows.events import console_line

    line = console_line({"pass_id": "p1", "paths": {"product": "/products/p1/v.zarr"}, "tiles_total": 6,
                         "tiles_lost": 1, "timeliness": {"last_byte": "2026-12-06T04:50:01+00:00",
                                                         "latency_s": 12.34}})
    assert line == ("pass p1: received 04:50:01, product /products/p1/v.zarr, tiles lost 1 of 6 (listed for "
                    "retransmission), latency 12.3 s")


def test_a_pass_that_stops_arriving_says_until_when_it_waits_once_per_stall(tmp_path, tiny_codec, prefect_harness,
                                                                           monkeypatch):
    """``NAME.part`` that stops growing: after STALL_NOTICE_S one gsp.pass.waiting event (and log line) says
    until when the run waits for the rest and what has come; not again while it stays still, again after it
    grew and stopped anew."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    import flows.arrivals as arrivals
    from flows.events import PASS_WAITING, clock_time

    _, p = make_pass(tmp_path / "src", tiny_codec, "slow-pass", height=200, width=300)  # 6 tiles
    data = p.read_bytes()
    part = tmp_path / "inbox" / "slow-pass.gsp.part"
    part.parent.mkdir()
    part.write_bytes(data[: 3 * len(data) // 4])
    monkeypatch.setattr(arrivals, "STALL_NOTICE_S", 0.3)
    feed = arrivals.ArrivingFile(part, tmp_path / "state" / "arriving.gsp", stale_after_s=600)

    def events() -> list:
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=EventFilter(event=EventNameFilter(name=[PASS_WAITING])), limit=50)
        return sorted((e for e in page.events if e.payload["file"] == "slow-pass.gsp"), key=lambda e: e.occurred)

    feed.poll()
    assert not events()
    time.sleep(0.4)
    t = time.time()
    feed.poll(), feed.poll()
    got = []
    for _ in range(50):
        got = events()
        if got:
            break
        time.sleep(0.2)
    assert len(got) == 1, got
    received, total = feed.received, 6
    assert 0 < received < total
    message = got[0].payload["message"]
    assert message.startswith(f"waiting for the rest of slow-pass.gsp until {clock_time(t + 600 - 0.4)}") or \
        message.startswith(f"waiting for the rest of slow-pass.gsp until {clock_time(t + 600)}"), message
    assert f"({received} of {total} tiles received" in message
    assert (got[0].payload["tiles_received"], got[0].payload["tiles_total"]) == (received, total)
    time.sleep(0.4)
    feed.poll()  # still still: said once
    part.write_bytes(data[:-40])  # it grew, then stopped again: said again
    feed.poll()
    time.sleep(0.4)
    feed.poll()
    for _ in range(50):
        got = events()
        if len(got) > 1:
            break
        time.sleep(0.2)
    assert len(got) == 2, got
