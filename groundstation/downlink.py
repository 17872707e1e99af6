"""A downlink simulator: writes a pass container into an inbox record by record, at a given rate, as a real
receiver would (``NAME.part`` growing, then renamed to ``NAME``), with optional losses to rehearse.

The bytes written are the container's own, in its order (header, tile records, trailer); ``drop`` leaves
records out, ``corrupt`` flips a byte inside their body (the CRC then fails), ``cut_after`` stops the writer
after that many records, half way through the next one (a downlink cut short). Used by ``gsp downlink``,
the streaming tests and ``benchmarks/pass_latency.py``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .container import PassReader
from .errors import ConfigError

__all__ = ["DownlinkResult", "pieces", "simulate_downlink"]

_FRAME_BYTES = 12  # sync, length, CRC (groundstation.container._FRAME)


@dataclass(frozen=True)
class DownlinkResult:
    part: str  # the growing file while it was written
    final: str | None  # the name it was renamed to (None when the writer left it as .part)
    bytes: int
    records: int  # tile records written whole (corrupted ones included)
    dropped: tuple[int, ...]
    corrupted: tuple[int, ...]
    cut: int | None  # the tile whose record was cut half way
    seconds: float
    first_byte: float  # POSIX times
    last_byte: float


def pieces(pass_path: str | Path) -> tuple[bytes, list[tuple[int, bytes]], bytes]:
    """(header bytes, [(tile, record bytes)] in file order, the rest: trailer) of an intact container."""
    reader = PassReader(pass_path)
    scan = reader.scan()
    data = Path(pass_path).read_bytes()
    order = sorted(scan.records.items(), key=lambda kv: kv[1][0])
    records, end = [], reader.data_offset
    for tile, (body_at, blen) in order:
        start = body_at - _FRAME_BYTES
        if start < end:
            raise ConfigError(f"{pass_path}: records overlap; give an intact pass to the simulator")
        records.append((tile, data[start: body_at + blen]))
        end = body_at + blen
    return data[: reader.data_offset], records, data[end:]


def simulate_downlink(pass_path: str | Path, inbox: str | Path, *, rate_mbit_s: float | None = None,
                      duration_s: float | None = None, drop=(), corrupt=(), cut_after: int | None = None,
                      rename: bool = True, name: str | None = None, on_record=None) -> DownlinkResult:
    """Write ``pass_path`` into ``inbox`` as ``NAME.part`` at ``rate_mbit_s`` (or spread over ``duration_s``;
    neither: as fast as the disk takes it), fsync'd record by record, then rename it to ``NAME``.
    ``on_record(i, tile)`` is called after each record (progress; the time it takes does not count against the
    rate)."""
    if rate_mbit_s is not None and rate_mbit_s <= 0:
        raise ConfigError(f"--rate {rate_mbit_s}: must be > 0 Mbit/s")
    if duration_s is not None and duration_s < 0:
        raise ConfigError(f"--duration {duration_s}: must be >= 0 s")
    head, records, tail = pieces(pass_path)
    drop, corrupt = {int(t) for t in drop}, {int(t) for t in corrupt}
    total = len(head) + sum(len(r) for t, r in records if t not in drop) + len(tail)
    if duration_s is not None:
        rate = total * 8 / 1e6 / duration_s if duration_s > 0 else None
    else:
        rate = rate_mbit_s
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    final = inbox / (name or Path(pass_path).name)
    part = final.with_name(final.name + ".part")
    if final.exists() or part.exists():
        raise ConfigError(f"{final} or its .part is already in the inbox; remove it or give another --name")
    written, whole, cut = 0, 0, None
    t0 = started = time.time()

    def pace(n: int) -> None:
        nonlocal written
        written += n
        if rate:
            wait = t0 + written * 8 / (rate * 1e6) - time.time()
            if wait > 0:
                time.sleep(wait)

    with open(part, "wb") as f:
        def put(data: bytes) -> None:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            pace(len(data))

        put(head)
        for i, (tile, rec) in enumerate(records):
            if tile in drop:
                continue
            if cut_after is not None and whole >= cut_after:
                put(rec[: len(rec) // 2])
                cut = tile
                break
            if tile in corrupt:
                k = _FRAME_BYTES + len(rec[_FRAME_BYTES:]) // 2
                rec = rec[:k] + bytes([rec[k] ^ 0xFF]) + rec[k + 1:]
            put(rec)
            whole += 1
            if on_record is not None:  # time the caller holds the writer is not downlink time
                held = time.time()
                on_record(i, tile)
                t0 += time.time() - held
        if cut is None:
            put(tail)
    last = time.time()
    if rename:
        os.rename(part, final)
    return DownlinkResult(part=str(part), final=str(final) if rename else None, bytes=written, records=whole,
                          dropped=tuple(sorted(drop)), corrupted=tuple(sorted(corrupt)), cut=cut,
                          seconds=round(last - started, 3), first_byte=started, last_byte=last)
