"""Prefect events a station emits, for automations to react to (docs/operations.md, "Events and automations").

``gsp.pass.tiles-lost``
    a pass's product was written but tiles were lost. Resource ``gsp.pass.<pass_id>``; payload: ``pass_id``,
    ``pass_uid``, ``pass`` (the container), ``product``, ``version``, ``tiles_total``, ``tiles_lost`` and
    ``retransmission``: ``[{"tile": 3, "reason": "crc_mismatch", "detail": "..."}]`` (every lost tile with
    the reason the report gives).
``gsp.product.complete``
    a product was completed (also one with lost tiles). Resource ``gsp.product.<pass_id>.<version>``, related
    to the pass; payload: ``paths`` (``product``, ``metrics`` table, ``report``, ``pass``), ``version``, tile counts,
    ``bpp``, ``timings``, ``timeliness`` (acquisition, last byte, first tile decoded, product complete, latency
    from the last byte to the product in ``latency_s``) and ``metrics``: per product (``decoded`` / ``enhanced``) the pass's summary row
    (``bpp``, ``psnr_db``, ``ms_ssim``, the perceptual distance... with a reference scene; NaN as null).

``gsp.pass.waiting``
    a pass in the inbox stopped short: its header and some records are there, its end-of-pass trailer is not,
    and the watcher waits for the rest until ``stale_after_s`` after its last change (then it is processed with
    the tiles it has); or a file in the inbox is no readable pass (left alone until then in case it is still
    being written, then moved to ``failed/``). Resource ``gsp.inbox.<station>.<file>``; payload: ``file``,
    ``inbox``, ``until`` (ISO 8601 UTC, null when it waits for ever), ``tiles_received``, ``tiles_total`` (null
    for a file that is no pass) and ``message`` (the line the sweep logs: "waiting for the rest of NAME until
    14:05 UTC ..."). Emitted by every sweep that finds it;
    ``gsp serve``'s console prints it once per file and time.

Resources carry ``gsp.station`` (the station's name), so one server can tell stations apart. Prefect adds the
flow run, flow and deployment as related resources itself. Emitting never fails a run.
"""

from __future__ import annotations

import logging
import math

__all__ = ["PASS_TILES_LOST", "PASS_WAITING", "PRODUCT_COMPLETE", "ProductConsole", "clock_time", "console_line",
           "emit_pass_events", "emit_pass_waiting"]

log = logging.getLogger(__name__)

PASS_TILES_LOST = "gsp.pass.tiles-lost"
PRODUCT_COMPLETE = "gsp.product.complete"
PASS_WAITING = "gsp.pass.waiting"
#: Reason details are cut to this many characters (an event must stay small).
DETAIL_CHARS = 200


def _clean(value):
    """JSON-safe numbers: NaN/inf -> None, numpy scalars -> Python."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metrics(passes_df) -> dict:
    """{product: {column: value}} from the pass summary frame (numeric columns only)."""
    if passes_df is None or not len(passes_df):
        return {}
    out = {}
    for _, row in passes_df.iterrows():
        out[str(row["product"])] = {k: _clean(v) for k, v in row.items()
                                    if k not in ("pass_id", "product", "product_version", "evaluated_at", "status")
                                    and isinstance(_clean(v), (int, float, type(None)))}
    return out


def pass_events(summary: dict, passes_df=None, station: str | None = None) -> list[tuple[str, dict, list, dict]]:
    """The events a finished process-pass run emits, as (event, resource, related, payload)."""
    if station is None:
        from groundstation.config import load_station

        station = load_station().station
    pass_id, version = summary["pass_id"], summary["version"]
    pass_resource = {"prefect.resource.id": f"gsp.pass.{pass_id}", "prefect.resource.name": pass_id,
                     "gsp.pass.uid": str(summary.get("pass_uid", "")), "gsp.station": station}
    product_resource = {"prefect.resource.id": f"gsp.product.{pass_id}.{version}",
                        "prefect.resource.name": f"{pass_id} @ {version}", "gsp.station": station}
    events = []
    if summary.get("lost"):
        events.append((PASS_TILES_LOST, pass_resource, [{**product_resource, "prefect.resource.role": "product"}], {
            "pass_id": pass_id, "pass_uid": summary.get("pass_uid"), "pass": summary.get("pass"),
            "product": summary["product"], "version": version, "tiles_total": summary["tiles_total"],
            "tiles_lost": summary["tiles_lost"],
            "retransmission": [{"tile": int(d["tile"]), "reason": d["reason"],
                                "detail": str(d.get("detail", ""))[:DETAIL_CHARS]} for d in summary["lost"]],
        }))
    events.append((PRODUCT_COMPLETE, product_resource, [{**pass_resource, "prefect.resource.role": "pass"}], {
        "pass_id": pass_id, "version": version,
        "paths": {"product": summary["product"], "metrics": summary["metrics"], "report": summary["report"],
                  "pass": summary.get("pass")},
        "tiles_total": summary["tiles_total"],
        "tiles_ok": summary["tiles_ok"], "tiles_lost": summary["tiles_lost"], "bpp": _clean(summary.get("bpp")),
        "timings": {k: _clean(v) for k, v in (summary.get("timings") or {}).items()},
        "timeliness": summary.get("timeliness"),
        "metrics": _metrics(passes_df),
    }))
    return events


def emit_pass_events(summary: dict, passes_df=None) -> list:
    """Emit :func:`pass_events` through Prefect (``prefect.events.emit_event``); returns the emitted events
    (empty where no events client is configured). A failure is logged, never raised: the product is written."""
    from prefect.events import emit_event

    emitted = []
    try:
        for event, resource, related, payload in pass_events(summary, passes_df):
            ev = emit_event(event=event, resource=resource, related=related, payload=payload)
            if ev is not None:
                emitted.append(ev)
    except Exception as exc:  # noqa: BLE001 - events are for automations; the run's outcome does not hang on them
        log.warning("could not emit the events of pass %s: %s", summary.get("pass_id"), exc)
    return emitted


def clock_time(ts: float) -> str:
    """``14:05 UTC``: a POSIX time as the station's clock shows it, with the date when that is not today."""
    import time

    fmt = "%H:%M %Z" if time.localtime(ts)[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M %Z"
    return time.strftime(fmt, time.localtime(ts))


def emit_pass_waiting(inbox, name: str, message: str, until: float | None, tiles: tuple[int, int] | None) -> None:
    """Emit ``gsp.pass.waiting`` for inbox file ``name`` (see the module docstring); never raises."""
    from datetime import datetime, timezone

    from prefect.events import emit_event

    from groundstation.config import load_station

    try:
        station = load_station().station
        emit_event(event=PASS_WAITING, resource={"prefect.resource.id": f"gsp.inbox.{station}.{name}",
                                                 "prefect.resource.name": name, "gsp.station": station},
                   payload={"file": name, "inbox": str(inbox), "message": str(message),
                            "until": datetime.fromtimestamp(until, timezone.utc).isoformat(timespec="seconds")
                            if until is not None else None,
                            "tiles_received": tiles[0] if tiles else None, "tiles_total": tiles[1] if tiles else None})
    except Exception as exc:  # noqa: BLE001 - the console is told by courtesy; the watcher goes on
        log.warning("could not emit %s for %s: %s", PASS_WAITING, name, exc)


def console_line(payload: dict) -> str:
    """One line for ``gsp serve``'s console about a completed product (a ``gsp.product.complete`` payload): the
    pass, when its last byte came, the product, the tiles lost and the latency."""
    when = payload.get("timeliness") or {}
    latency = when.get("latency_s")
    if latency is None:
        latency = (payload.get("timings") or {}).get("total_s")
    received = str(when.get("last_byte") or "")[11:19] or "-"
    lost = payload.get("tiles_lost") or 0
    return (f"pass {payload.get('pass_id')}: received {received}, product {(payload.get('paths') or {}).get('product')}"
            f", tiles lost {lost} of {payload.get('tiles_total')}{' (listed for retransmission)' if lost else ''}, "
            f"latency {'-' if latency is None else f'{float(latency):.1f} s'}")


class ProductConsole:
    """Prints :func:`console_line` for every ``gsp.product.complete`` event of ``station`` on the API in
    force (``gsp serve``: one line per pass, whichever run made it), and ``inbox: waiting for the rest of NAME
    until ...`` once per ``gsp.pass.waiting`` file and time, polling every ``poll_s`` seconds from now on, in a
    daemon thread; :meth:`stop` ends it."""

    def __init__(self, station: str, print_fn=print, poll_s: float = 3.0) -> None:
        import threading

        self.station, self.print_fn, self.poll_s = station, print_fn, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ProductConsole":
        import contextvars
        import threading

        ctx = contextvars.copy_context()  # the caller's Prefect settings (the API URL) hold in the thread
        self._thread = threading.Thread(target=ctx.run, args=(self._run,), name="gsp-product-console", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from datetime import datetime, timezone

        from prefect.client.orchestration import get_client
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

        since, seen, waiting = datetime.now(timezone.utc), set(), set()
        while not self._stop.wait(self.poll_s):
            try:
                with get_client(sync_client=True) as client:
                    page = client.read_events(filter=EventFilter(
                        event=EventNameFilter(name=[PRODUCT_COMPLETE, PASS_WAITING]),
                        occurred=EventOccurredFilter(since=since)), limit=50)
                for ev in sorted(page.events, key=lambda e: e.occurred):
                    if ev.id in seen or ev.resource.get("gsp.station") != self.station:
                        continue
                    seen.add(ev.id)
                    if ev.event == PASS_WAITING:
                        key = (ev.payload.get("file"), ev.payload.get("until"))
                        if key not in waiting:  # every sweep that finds it says so: printed once
                            waiting.add(key)
                            self.print_fn(f"inbox: {ev.payload.get('message')}")
                        continue
                    self.print_fn(console_line(ev.payload))
            except Exception as exc:  # noqa: BLE001 - the console is a courtesy; the station goes on
                log.debug("product console: %s", exc)
