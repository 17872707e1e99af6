"""``reprocess-archive``: new product versions for archived passes (another enhancer, seed, ...), beside the old.

Selects pass containers under ``archive`` by ``glob`` and by acquisition time (``since`` <= t, t before the
end of ``until``), computes each pass's product version for the requested models and parameters, skips
passes whose product of that version is already complete, and processes the rest as ``process-pass``
subflows, at most ``concurrency`` at a time, all on one Dask cluster. Interrupted products are resumed (their
done markers), never restarted.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import AfterValidator, ValidationInfo

from groundstation.config import load_station
from groundstation.errors import ConfigError, GSPError, PassFormatError
from groundstation.product import status

from .access import ArchiveDir, PathNotAllowed, ProductsDir, roots_in_force, run_checked
from .cluster import dask_address as cluster_address
from .cluster import make_task_runner
from .identity import pass_header, resolve_run
from .names import reprocess_run_name
from .options import ProcessOptions, station_options
from .process_pass import process_pass
from .runtime import prefect_api

__all__ = ["parse_when", "reprocess_archive", "run_reprocess", "select_passes"]


def parse_when(text: str | None, *, end: bool = False) -> dt.datetime | None:
    """``YYYY-MM-DD`` or ISO 8601 -> aware UTC datetime; a bare date as ``end`` means the end of that day."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{text!r}: give a date as YYYY-MM-DD or an ISO 8601 time (2024-05-01T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    if end and len(text) == 10:  # a date: include the whole day
        when += dt.timedelta(days=1)
    return when


def select_passes(archive: str | Path, glob: str = "**/*", since: str | None = None,
                  until: str | None = None) -> tuple[list[tuple[Path, object]], list[str]]:
    """(``[(path, header)]`` of pass containers in the window, sorted by acquisition time; notes on skipped files).

    When the station's roots are in force (a run from a deployment), every matched file must resolve under the
    inbox or archive root (a symlink out of the archive, a ``..`` in the glob): otherwise nothing is read and the
    selection is refused with the offending files named."""
    archive = Path(archive)
    if not archive.is_dir():
        raise ConfigError(f"--archive {archive}: no such folder")
    t0, t1 = parse_when(since), parse_when(until, end=True)
    roots = roots_in_force()
    candidates, refused = [], []
    for path in sorted(archive.glob(glob)):
        if not path.is_file() or path.name.startswith(".") or path.name.endswith((".part", ".tmp")):
            continue
        try:
            candidates.append(path if roots is None else roots.check("archive file", path, "pass"))
        except PathNotAllowed as exc:
            refused.append(str(exc))
    if refused:
        raise PathNotAllowed(f"{len(refused)} files selected by glob {glob!r} lie outside the station's roots; "
                             f"nothing was read: " + "; ".join(refused[:5]) + (" ..." if len(refused) > 5 else ""))
    out, notes = [], []
    for path in candidates:
        try:
            header = pass_header(path)
        except PassFormatError as exc:
            notes.append(f"{path.name}: not a pass container ({str(exc)[:120]})")
            continue
        if header.supplement is not None:  # resent tiles, already applied to the pass's product (watch-inbox)
            notes.append(f"{path.name}: a supplement of pass {header.pass_id} (tiles "
                         f"{', '.join(map(str, header.supplement.tiles))}), not a pass")
            continue
        when = parse_when(header.acquisition_time)
        if (t0 and when < t0) or (t1 and when >= t1):
            continue
        out.append((path, header))
    out.sort(key=lambda ph: (ph[1].acquisition_time, str(ph[0])))
    return out, notes


@task(name="reprocess-one", cache_policy=NONE)
def reprocess_one(pass_path: str, products: str, options: ProcessOptions, address: str) -> dict:
    """Run ``process-pass`` for one archived pass on the shared cluster; operator errors become a failed row."""
    try:
        summary = process_pass.with_options(task_runner=make_task_runner(address))(pass_path, products, options)
    except GSPError as exc:
        get_run_logger().error("%s: %s", pass_path, exc)
        return {"pass": pass_path, "status": "failed", "error": str(exc)}
    return {"pass": pass_path, "pass_id": summary["pass_id"], "status": "done", "product": summary["product"],
            "tiles_lost": summary["tiles_lost"], "exit_code": summary["exit_code"]}


def _when(end: bool):
    def validate(text: str, info: ValidationInfo) -> str:
        try:
            parse_when(text, end=end)
        except ConfigError as exc:
            raise ConfigError(f"{info.field_name} {exc}") from None
        return text

    return AfterValidator(validate)


#: ``since``: acquired at or after; ``until``: acquired before the end of this day / before this time.
Since = Annotated[str, _when(end=False)]
Until = Annotated[str, _when(end=True)]


@flow(name="reprocess-archive", task_runner=ThreadPoolTaskRunner(max_workers=2), validate_parameters=False,
      flow_run_name=reprocess_run_name)
def reprocess_archive(archive: ArchiveDir | None = None, products: ProductsDir | None = None,
                      options: ProcessOptions | None = None, since: Since | None = None, until: Until | None = None,
                      glob: str = "**/*", dask_address: str | None = None) -> list[dict]:
    """New versioned products for the selected passes; complete ones are skipped. Concurrency is the task
    runner's (``run_reprocess`` sets it).

    ``archive`` / ``products`` default to the station's archive and products roots, ``options`` to the model
    defaults with the station's pixel synthesis. From a deployment every path must lie under the station's
    roots (``flows.access``).

    Args:
        archive: folder of archived passes, under the archive root (default: that root)
        products: products folder, under the products root (default: that root)
        options: models and parameters of the new product version (default: the station's)
        since: acquired at or after (YYYY-MM-DD or ISO 8601, UTC if no zone)
        until: acquired before the end of this day / before this time
        glob: files under the archive (default every file)
        dask_address: scheduler of an existing Dask cluster (default: a LocalCluster per run)
    """
    return run_checked(reprocess_archive, dict(locals()), _reprocess)


def _reprocess(archive, products, options, since, until, glob, dask_address) -> list[dict]:
    """The body of :func:`reprocess_archive`, its parameters validated."""
    log = get_run_logger()
    roots = load_station().roots
    archive = archive or roots.archive
    products = products or roots.products
    options = options or station_options()
    passes, notes = select_passes(archive, glob, since, until)
    for n in notes:
        log.info("Archive: skipping %s", n)
    log.info("Archive %s: %d passes selected (glob %r, since %s, until %s)", archive, len(passes), glob, since, until)
    checked: set[tuple] = set()
    rows, todo = [], []
    for path, header in passes:
        key = (options.codec or header.codec.name, header.codec.sha256)
        # each codec's checkpoints are loaded once: a wrong one fails here, before any work
        paths = resolve_run(header, options, products, load=key not in checked).paths
        checked.add(key)
        if status(paths.product) == "complete":
            rows.append({"pass": str(path), "pass_id": header.pass_id, "status": "skipped",
                         "product": str(paths.product), "reason": "product of this version is complete"})
            continue
        todo.append(path)
    log.info("Archive: %d passes to process, %d already done", len(todo), len(rows))
    if todo:
        with cluster_address(dask_address) as address:
            futures = [reprocess_one.submit(str(p), str(products), options, address) for p in todo]
            rows += [f.result() for f in futures]
    return rows


def run_reprocess(archive: str | Path, products: str | Path, options: ProcessOptions, *, since: str | None = None,
                  until: str | None = None, glob: str = "**/*", concurrency: int = 2,
                  dask_address: str | None = None) -> list[dict]:
    """``gsp reprocess``: at most ``concurrency`` passes at a time, on one Dask cluster."""
    if concurrency < 1:
        raise ConfigError(f"--concurrency {concurrency}: must be >= 1")
    parse_when(since), parse_when(until, end=True)  # bad dates fail before the run
    with prefect_api():
        runner = ThreadPoolTaskRunner(max_workers=concurrency)
        return reprocess_archive.with_options(task_runner=runner)(str(archive), str(products), options, since, until,
                                                                  glob, dask_address)
