"""The operator-facing outputs of a run: the markdown report and the Prefect UI artifacts.

Artifacts (keys are per pass, so the UI's Artifacts page shows each pass's history across runs):

* ``gsp-<pass>-progress``: a progress artifact, updated as batches finish;
* ``gsp-<pass>-tiles``: a table artifact, one row per (tile, product) with the metrics columns;
* ``gsp-<pass>-report``: the markdown report (summary, quality per product, damaged tiles to ask again for,
  where the product, metrics table and report are).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from groundstation.metrics import PERCEPTUAL_COLUMNS, PRIMARY
from groundstation.product import gdal_view_path

__all__ = ["RunProgress", "artifact_key", "render_report", "table_rows"]


def artifact_key(pass_id: str, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    s = re.sub(r"[^a-z0-9]+", "-", pass_id.lower()).strip("-")[:48] or "pass"
    return f"gsp-{s}-{what}"


class RunProgress:
    """A run's progress in tiles: the ``gsp-<pass>-progress`` artifact (its description says how many tiles were
    received, decoded and enhanced; updated at most every ``every_s`` seconds and at the end), a log line every
    ``log_every_s`` seconds while a pass arrives, and, for an operator who started the run in a terminal, a
    console bar (served runs have no terminal). Call :meth:`tiles` as counts change, :meth:`close` at the end."""

    def __init__(self, pass_id: str, n_tiles: int, stages: int = 2, *, every_s: float = 1.0,
                 log_every_s: float = 10.0, log=None) -> None:
        import sys

        from prefect.artifacts import create_progress_artifact
        from tqdm import tqdm

        self.pass_id, self.n, self.stages = pass_id, n_tiles, stages
        self.id = create_progress_artifact(0.0, key=artifact_key(pass_id, "progress"),
                                           description=f"Pass {pass_id}: waiting for tiles")
        self.every_s, self.log_every_s, self.log = every_s, log_every_s, log
        self._sent = self._logged = 0.0
        self._last: tuple = ()
        self._bar = tqdm(total=n_tiles * stages, desc=f"pass {pass_id}", unit="tile",
                         disable=not sys.stderr.isatty(), leave=False)

    def text(self, received: int, decoded: int, enhanced: int) -> str:
        done = f"{received} of {self.n} tiles received, {decoded} decoded"
        return f"Pass {self.pass_id}: {done}" + (f", {enhanced} enhanced" if self.stages > 1 else "")

    def tiles(self, received: int, decoded: int, enhanced: int, *, final: bool = False) -> None:
        import time

        from prefect.artifacts import update_progress_artifact

        done = decoded + (enhanced if self.stages > 1 else 0)
        self._bar.update(done - self._bar.n)
        self._last = (received, decoded, enhanced)
        now = time.monotonic()
        if final or now - self._sent >= self.every_s:
            pct = min(100.0, 100.0 * done / (self.n * self.stages)) if self.n else 100.0
            update_progress_artifact(self.id, pct, description=self.text(received, decoded, enhanced))
            self._sent = now
        if self.log is not None and received < self.n and now - self._logged >= self.log_every_s:
            self.log.info("%s", self.text(received, decoded, enhanced))
            self._logged = now

    def close(self) -> None:
        if self._last:
            self.tiles(*self._last, final=True)
        self._bar.close()


def _clean(v):
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None
        return round(v, 4)
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    return v


def table_rows(tiles: pd.DataFrame) -> list[dict]:
    """JSON-safe rows (NaN and inf become empty cells) for ``create_table_artifact``."""
    return [{k: _clean(v) for k, v in row.items()} for row in tiles.to_dict(orient="records")]


#: Left out of the UI's tile table: the same on every row (the pass and the version are in the run's name and
#: report), for GIS (footprints) or said better by another column (MSE: PSNR); all of them stay in the Parquet
#: table beside the product.
TILE_TABLE_DROP = ("pass_id", "product_version", "height", "width", "mse", "crs_xmin", "crs_ymin", "crs_xmax",
                   "crs_ymax", "lon_min", "lat_min", "lon_max", "lat_max")
#: The UI's short column names (with units) for the Parquet table's columns.
TILE_TABLE_NAMES = {"tile_index": "tile", "compressed_bytes": "bytes", "psnr_db": "PSNR dB", "ms_ssim": "MS-SSIM",
                    "lpips_alex": "LPIPS-Alex", "lpips_vgg": "LPIPS-VGG", "stlpips_alex": "ST-LPIPS",
                    "decode_ms": "decode ms", "enhance_ms": "enhance ms"}
#: Left out when the same on every row (said once in the report).
TILE_TABLE_DROP_IF_SAME = ("device",)


def tile_table_rows(tiles: pd.DataFrame) -> list[dict]:
    """The tile table as the UI shows it: ``tile``, ``product`` and ``status`` first, then the figures under
    short names with units (:data:`TILE_TABLE_NAMES`), timings in whole milliseconds; left out: columns empty on
    every row (the quality metrics without a reference scene, notes when there are none), a device that is the
    same on every row, and :data:`TILE_TABLE_DROP`."""
    t = tiles.drop(columns=[c for c in TILE_TABLE_DROP if c in tiles.columns])
    for c in t.select_dtypes(include="object").columns:
        t[c] = t[c].mask(t[c] == "")  # an empty note is no note
    t = t.dropna(axis=1, how="all")
    t = t.drop(columns=[c for c in TILE_TABLE_DROP_IF_SAME if c in t.columns and t[c].nunique(dropna=False) <= 1])
    for c in ("decode_ms", "enhance_ms"):
        if c in t.columns:
            t[c] = [None if pd.isna(v) else int(round(v)) for v in t[c]]
    t = t.rename(columns=TILE_TABLE_NAMES)
    first = [c for c in ("tile", "product", "status") if c in t.columns]
    return table_rows(t[first + [c for c in t.columns if c not in first]])


def _fmt(v, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def _timeliness_lines(when: dict | None) -> list[str]:
    """The report's timeliness line: from the pass's last byte to the complete product."""
    if not when or when.get("latency_s") is None:
        return []
    seen = f"; header seen {when['header_seen']} (processed while arriving)" if when.get("header_seen") else ""
    return [f"- timeliness: **product {_fmt(when['latency_s'], '.1f')} s after the last byte** "
            f"(last byte {when['last_byte']}, first tile decoded {when.get('first_tile_decoded') or '-'}, "
            f"product complete {when['product_complete']}{seen}; acquired {when['acquisition_time']})"]


def render_report(summary: dict, passes: pd.DataFrame, perceptual: str | None = None, *,
                  quicklook_src: str | None = None) -> str:
    """The run's markdown report (also written next to the product). With a quicklook (``summary["quicklook"]``)
    the picture comes first: the file beside the report, or ``quicklook_src`` (the report artifact gives a
    ``data:`` URI, which the UI shows)."""
    s = summary
    lines = [
        f"# Pass {s['pass_id']}",
        "",
        f"Acquired {s.get('acquisition_time', '?')}; scene {s['scene']}; {s['tiles_total']} codec tiles of "
        f"{s['tile_size']} px.",
        "",
        *([f"![Quicklook of pass {s['pass_id']}: tile grid, lost tiles hatched in red]"
           f"({quicklook_src or Path(s['quicklook']).name})", ""] if s.get("quicklook") else []),
        "## Summary",
        "",
        f"- tiles decoded: **{s['tiles_ok']} of {s['tiles_total']}**"
        + (f", **{s['tiles_lost']} lost** (masked as nodata; listed below)" if s["tiles_lost"] else ""),
        f"- compressed: {s['bytes']} bytes, {_fmt(s['bpp'], '.4f')} bpp over the decoded tiles",
        f"- codec: `{s['codec']['name']}` (sha256 {s['codec']['sha256'][:12]}...)",
        ("- enhancer: `{name}` (sha256 {sha}...), seed {seed}, temperature {temp}, strength {strength}, halo {halo} "
         "px".format(name=s["enhancer"]["name"], sha=s["enhancer"]["sha256"][:12], seed=s["enhancer"]["seed"],
                     temp=s["enhancer"]["temperature"], strength=s["enhancer"].get("strength", 1),
                     halo=s["enhancer"]["halo"])
         if s.get("enhancer") else "- enhancer: none (decoded-only product, --no-enhance)"),
        f"- devices: decode {s['devices'].get('decode') or '-'}, enhance {s['devices'].get('enhance') or '-'}",
        f"- time: {_fmt(s['timings']['total_s'], '.1f')} s in all; batches run {s['batches']['run']}, "
        f"reused from an earlier run {s['batches']['skipped']}, failed {s['batches']['failed']}",
        *([("- delivery after the last tile: " + ", ".join(f"{k.replace('_', ' ')} {_fmt(v, '.2f')} s"
                                                          for k, v in s["timings"]["delivery_s"].items()))]
          if s["timings"].get("delivery_s") else []),
        *_timeliness_lines(s.get("timeliness")),
        *([f"- seams (step across codec-tile boundaries / step inside tiles; about 1 in a source scene; decode "
           f"mode {(s.get('decode') or {}).get('mode', 'tile')}): "
           + ", ".join(f"{k} {_fmt(v, '.2f')}" for k, v in s["seam_ratio"].items())] if s.get("seam_ratio") else []),
        "",
        "## Quality",
        "",
    ]
    if len(passes):
        has_ref = passes["psnr_db"].notna().any()
        if has_ref:
            pcols = [c for c in PERCEPTUAL_COLUMNS if c in passes and passes[c].notna().any()]
            head = ["product", "tiles ok", "bpp", "PSNR (dB)", "MS-SSIM", *pcols]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for _, r in passes.iterrows():
                cells = [r["product"], f"{r['n_tiles_ok']}/{r['n_tiles']}", _fmt(r["bpp"], ".4f"),
                         _fmt(r["psnr_db"], ".2f"), _fmt(r["ms_ssim"], ".4f"), *(_fmt(r[c], ".4f") for c in pcols)]
                lines.append("| " + " | ".join(cells) + " |")
            if perceptual:
                lines += ["", f"Perceptual metrics ({PRIMARY}, the paper's, first): {perceptual}"]
            if passes["ms_ssim"].isna().all():
                lines += ["", "MS-SSIM is empty: every tile is smaller than the 161 px it needs (see the table's notes)."]
        else:
            lines += ["| product | tiles ok | bpp | decode ms (sum) | enhance ms (sum) |", "|---|---|---|---|---|"]
            for _, r in passes.iterrows():
                lines.append(f"| {r['product']} | {r['n_tiles_ok']}/{r['n_tiles']} | {_fmt(r['bpp'], '.4f')} | "
                             f"{_fmt(r['decode_ms_total'], '.0f')} | {_fmt(r['enhance_ms_total'], '.0f')} |")
            lines += ["", "No reference scene was given: only rate and timing figures (pass --reference SCENE "
                      "for PSNR, MS-SSIM and a perceptual distance)."]
    lines += ["", "## Damaged tiles (ask for retransmission)", ""]
    if s["lost"]:
        lines += ["| tile | reason | detail |", "|---|---|---|"]
        lines += [f"| {d['tile']} | {d['reason']} | {d['detail']} |" for d in s["lost"]]
        lines += ["", f"Retransmission request for pass {s['pass_id']} (uid {s['pass_uid']}): tiles "
                  + ", ".join(str(d["tile"]) for d in s["lost"])]
    else:
        lines.append("None: every tile decoded and verified.")
    if s.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    lines += [
        "",
        "## Outputs",
        "",
        f"- product: `{s['product']}` (version `{s['version']}`)",
        f"- metrics table: `{s['metrics']}`",
        f"- report: `{s['report']}`",
    ]
    if s.get("quicklook"):
        lines.append(f"- quicklook (coordinates, scale bar, tile grid, lost tiles): `{s['quicklook']}`")
    if s.get("lost_geojson"):
        lines.append(f"- lost tiles (GeoJSON, EPSG:4326, with the reason): `{s['lost_geojson']}`")
    if s.get("stac_item"):
        lines.append(f"- STAC item: `{s['stac_item']}` (in the station catalogue `catalog.json` of the products "
                     "folder)")
    if s.get("cog"):
        lines.append(f"- Cloud-Optimized GeoTIFF (RGB, mask = valid, overviews; in the STAC item): `{s['cog']}`")
    lines += [
        f"- GIS (GDAL, QGIS): open `{gdal_view_path(s['product'], 'enhanced' if s.get('enhancer') else 'decoded')}` "
        f"(RGB, mask = valid)" + ("" if s.get("cog") else f"; a COG: `gsp export {s['product']} --cog OUT.tif` "
                                   "(or run with --cog)"),
        f"- pass container: `{s['pass']}`",
        "",
    ]
    return "\n".join(lines)
