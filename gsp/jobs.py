"""Training and evaluation as Prefect flows and deployments, so operators start, watch and resume them from the UI.

================ ===================================== =====================================================
deployment       flow (entrypoint)                     runs
================ ===================================== =====================================================
train-codec/NAME ``gsp/jobs.py:train_codec_job``       :func:`gsp.training.codec.train_codec` (``gsp
                                                       train-codec``), then the export
train-enhancer/  ``gsp/jobs.py:train_enhancer_job``    :func:`gsp.training.enhancer.train_enhancer` (``gsp
NAME                                                   train-enhancer``), then the export
evaluate/NAME    ``gsp/jobs.py:evaluate_job``          :func:`gsp.evaluation.evaluate_folder` (``gsp
                                                       evaluate``), with ``sweep``: ``--sweep``
export-product/  ``gsp/jobs.py:export_job``            ``gsp export PRODUCT --cog --stac``: a complete
NAME                                                   product's COG and STAC Item
================ ===================================== =====================================================

These flows only wrap the commands' functions: the same run folders, checkpoints, ``loss.csv``, tables and
plots. ``flows`` (the orchestration layer) must not import the application, so the deployments are built here
(:func:`job_deployments`) and handed to :func:`flows.deployments.serve_station` by ``gsp serve``;
``prefect.yaml`` declares the same four for ``prefect deploy``.

**Parameters** are typed: paths with the root-checked types of :mod:`flows.access` (a run started from a deployment
is refused before it starts when ``out`` lies outside the runs root, the images or pairs outside the archive or
runs root, a checkpoint outside the weights or runs root), options as the pydantic models the commands and the
enhancer recipes build too (:mod:`gsp.training.options`; for train-codec: the registry's default codec's size and
lambda; for train-enhancer: the presets, with the architecture of the registry's default enhancer in the served
deployment; for evaluate: every rate point of the registry). ``out`` defaults to ``<runs root>/<flow name>``.

**Resume**: the training functions resume from ``OUT/last.pt`` when the options that define the run are
unchanged (only ``steps``, ``checkpoint_every``, ``threads`` and ``device`` may change), and evaluation
resumes from ``OUT/per_image.csv``: a rerun with the same ``out`` continues (e.g. with more ``steps``) where
the last run stopped, a run with other options is refused with what to do.

**Artifacts** (keys ``gsp-<flow>-<run folder>-...``, so the UI's Artifacts page keeps each run folder's
history): ``-progress`` (steps or images done, updated while the run works), ``-loss`` (the loss table, at
most :data:`LOSS_TABLE_ROWS` rows evenly spaced over the steps) or ``-evaluation`` (the evaluation table, and
``-sweep`` with a sweep), and ``-report`` (markdown: what ran, where it stopped, the files). With ``export``
the inference checkpoint is written there, and its model card beside it (``<export>.md``: architecture,
sha256, data, options, last losses); the codec's export fills the entropy tables as ``gsp train-codec
--export`` does.

Training runs in the flow's own process (the worker that picked the run, or ``gsp serve``), with
``options.threads`` torch threads; an enhancer trains on a GPU with ``options.device: cuda`` where that
process has one. A Dask cluster's GPU workers are not used for training.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.access import CheckpointFile, DatasetPath, ModelChoice, ProductsDir, RunFolder, run_checked
from flows.names import job_run_name
from groundstation.config import load_station
from groundstation.errors import ConfigError, GSPError

from .training.options import CodecTrainOptions, EnhancerTrainOptions

__all__ = ["CodecTrainOptions", "EnhancerTrainOptions", "JOBS", "LOSS_TABLE_ROWS", "SweepOptions",
           "evaluate_job", "export_job", "job_deployments", "train_codec_job", "train_enhancer_job"]

log = logging.getLogger(__name__)

#: deployment (flow) name -> entrypoint, as ``prefect.yaml`` names them (file path : flow object).
JOBS = {
    "train-codec": "gsp/jobs.py:train_codec_job",
    "train-enhancer": "gsp/jobs.py:train_enhancer_job",
    "evaluate": "gsp/jobs.py:evaluate_job",
    "export-product": "gsp/jobs.py:export_job",
}

#: The loss table artifact holds at most this many rows (evenly spaced over the steps, the last one included);
#: ``OUT/loss.csv`` has every step.
LOSS_TABLE_ROWS = 200
#: A progress artifact is updated at most this often (an API call each), and at the end.
PROGRESS_EVERY_S = 2.0


# ------------------------------------------------------------------------------------------------ options

class SweepOptions(BaseModel):
    """The perception-distortion sweep of ``gsp evaluate --sweep`` (null: the command's default)."""

    model_config = ConfigDict(extra="forbid")

    temperatures: list[float] | None = Field(None, description="enhancer temperatures, >= 0 (the registry's "
                                             "temperature is always added); [] = that one alone")
    strengths: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(
        None, min_length=1, description="enhancer strengths swept at each temperature, in (0, 1] (the fraction of "
        "its change kept; default [1])")
    noise: list[float] | None = Field(None, description="Gaussian-noise control, stds in DN; [] = none")
    unsharp: list[float] | None = Field(None, description="unsharp-mask control, whole percent; [] = none")
    unsharp_radius: float | None = Field(None, gt=0)
    vgg: Literal["none", "enhanced", "all"] | None = None
    only: bool = Field(False, description="only the sweep, without the evaluation table (no bpp, MS-SSIM or "
                       "secondary perceptual columns): --sweep-only")

    def spec(self):
        from .evaluation import SweepSpec

        given = self.model_dump(exclude_none=True, exclude={"only"})
        return SweepSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


# ------------------------------------------------------------------------------------------------ helpers

def _out(out: str | None, flow_name: str) -> Path:
    return Path(out) if out else load_station().roots.paths()["runs"] / flow_name


def _key(flow_name: str, out: Path, what: str) -> str:
    from flows.report import artifact_key

    return artifact_key(f"{flow_name}-{out.name}", what)


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


class _Progress:
    """A progress artifact: created at the first call (with where the run starts, so a resumed run starts at
    its checkpoint's share), updated at most every :data:`PROGRESS_EVERY_S` seconds and at the end."""

    def __init__(self, key: str, description: str):
        self.key, self.description = key, description
        self.id = None
        self.last = 0.0

    def __call__(self, done: int, total: int, *_: object) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        pct = 100.0 * min(done, total) / total if total else 100.0
        now = time.monotonic()
        try:
            if self.id is None:
                self.id = create_progress_artifact(pct, key=self.key, description=self.description)
            elif pct >= 100.0 or now - self.last >= PROGRESS_EVERY_S:
                update_progress_artifact(self.id, pct)
            else:
                return
        except Exception as exc:  # noqa: BLE001 - the UI's view of the run never stops the run
            log.warning("progress artifact %s: %s", self.key, exc)
        self.last = now

    def finish(self) -> None:
        if self.id is not None:
            self(1, 1)


def _loss_table(csv_path: Path, max_rows: int = LOSS_TABLE_ROWS) -> list[dict]:
    import numpy as np
    import pandas as pd

    from flows.report import table_rows

    if not csv_path.is_file():
        return []
    df = pd.read_csv(csv_path)
    if len(df) > max_rows:
        df = df.iloc[np.unique(np.linspace(0, len(df) - 1, max_rows).round().astype(int))]
    return table_rows(df)


def _publish(flow_name: str, out: Path, table: list[dict], table_what: str, table_text: str, report: str) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(table, key=_key(flow_name, out, table_what), description=table_text)
    create_markdown_artifact(report, key=_key(flow_name, out, "report"), description=f"{flow_name}: {out}")


def _md_value(v) -> str:
    return f"`{v}`" if isinstance(v, (str, Path)) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _model_card(path: Path, kind: str, *, name: str, sha256: str, arch: str, step: int, run: Path,
                data: str, options: dict, last: dict) -> Path:
    """Write ``<export>.md`` beside the exported checkpoint (the registry's ``card``)."""
    from groundstation.fileio import write_text_atomic

    station = load_station().station
    last_text = ", ".join(f"{k} {v}" for k, v in last.items() if k != "step") or "-"
    lines = [f"# Model card: `{name}` ({kind})", "", "| | |", "|---|---|",
             f"| architecture | {arch} |",
             f"| file | `{path.name}` |",
             f"| sha256 | `{sha256}` |",
             f"| data | `{data}` |",
             f"| training | {step} steps in `{run}` (station {station}, flow run {_flow_run_id() or '-'}); "
             f"options in `{run / 'config.json'}` |",
             f"| last step | {last_text} |",
             f"| curve | `{run / 'loss.png'}`, `{run / 'loss.csv'}` |", "",
             "## Options", "", "```json", json.dumps(options, indent=2, default=str), "```", "",
             "To use it by name, add it to `configs/models.yaml` (path, sha256 above, arch, card: this file).", ""]
    card = path.with_suffix(".md")
    write_text_atomic(card, "\n".join(lines))
    return card


def _last_row(table: list[dict]) -> dict:
    return dict(table[-1]) if table else {}


def _training_report(title: str, res: dict, options: dict) -> str:
    lines = [f"# {title}", "",
             f"Run folder `{res['out']}`: {'resumed at' if res['start_step'] else 'started at'} step "
             f"{res['start_step']}, now at step {res['step']} of {res['steps']}.", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {_md_value(v)} |" for k, v in res["last"].items()]
    lines += ["", "## Files", "", f"- checkpoint (resume from here with the same options and `out`): "
              f"`{res['checkpoint']}`", f"- loss per step: `{Path(res['out']) / 'loss.csv'}`, curve "
              f"`{Path(res['out']) / 'loss.png'}`", f"- options: `{Path(res['out']) / 'config.json'}`"]
    if res.get("export"):
        lines += [f"- exported: `{res['export']}` (sha256 `{res['sha256']}`), model card `{res['card']}`"]
    lines += ["", "## Options", "", "```json", json.dumps(options, indent=2, default=str), "```", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- flows

@flow(name="train-codec", validate_parameters=False, flow_run_name=job_run_name,
      description="Train (or resume) a Chandelier ELIC codec into a run folder under the runs root; export it.")
def train_codec_job(data: list[DatasetPath], out: RunFolder | None = None, options: CodecTrainOptions | None = None,
                    export: CheckpointFile | None = None) -> dict:
    """``gsp train-codec DATA... -o OUT [options] [--export FILE]`` as a flow: resumes from ``OUT/last.pt``."""
    return run_checked(train_codec_job, dict(locals()), _train_codec)


def _train_codec(data, out, options, export) -> dict:
    import torch

    from .training.codec import export_codec, train_codec

    if not data:
        raise ConfigError("data: give at least one image folder")
    run = _out(out, "train-codec")
    options = options or CodecTrainOptions.from_registry()
    cfg = options.config(data, str(run))
    progress = _Progress(_key("train-codec", run, "progress"), f"train-codec {run}: steps done of {cfg.steps}")
    start: list[int] = []

    def on_step(step: int, total: int, row: dict | None) -> None:
        if row is None:
            start.append(step)
        progress(step, total)

    ckpt = train_codec(cfg, progress=False, on_step=on_step)
    progress.finish()
    step = int(torch.load(ckpt, weights_only=True, map_location="cpu")["step"]) if ckpt.is_file() else 0
    table = _loss_table(run / "loss.csv")
    res = {"out": str(run), "checkpoint": str(ckpt), "start_step": start[0] if start else step, "step": step,
           "steps": cfg.steps, "last": _last_row(table), "export": None, "sha256": None, "card": None,
           "flow_run_id": _flow_run_id()}
    if export:
        res["sha256"] = export_codec(ckpt, export)
        arch = cfg.arch()
        res["export"] = str(export)
        res["card"] = str(_model_card(
            Path(export), "codec", name=Path(export).stem, sha256=res["sha256"], step=step, run=run,
            arch=f"CompressAI `Elic2022Chandelier`: N={arch.N}, M={arch.M}, channel groups {list(arch.groups)}; "
                 f"lambda {cfg.lmbda}; parameters stored as float16, entropy tables filled",
            data=", ".join(data), options=cfg.model_dump(), last=res["last"]))
    _publish("train-codec", run, table, "loss", f"train-codec {run}: loss.csv (at most {LOSS_TABLE_ROWS} rows, "
             "evenly spaced)", _training_report(f"train-codec: `{run.name}`", res, cfg.model_dump()))
    return res


@flow(name="train-enhancer", validate_parameters=False, flow_run_name=job_run_name,
      description="Train (or resume) an INN-RSIC enhancer on ELIC pairs into a run folder under the runs root; "
      "export it.")
def train_enhancer_job(pairs: DatasetPath, out: RunFolder | None = None, options: EnhancerTrainOptions | None = None,
                       export: CheckpointFile | None = None) -> dict:
    """``gsp train-enhancer PAIRS -o OUT [options] [--export FILE]`` as a flow: resumes from ``OUT/last.pt``."""
    return run_checked(train_enhancer_job, dict(locals()), _train_enhancer)


def _train_enhancer(pairs, out, options, export) -> dict:
    from groundstation.fileio import write_json_atomic

    from .training.enhancer import config_from_options, export_enhancer, train_enhancer
    from .training.pairs import read_pairs

    run = _out(out, "train-enhancer")
    options = options or EnhancerTrainOptions.from_registry()
    records, _ = read_pairs(pairs)
    cfg = config_from_options(options, pairs, str(run), len(records))
    progress = _Progress(_key("train-enhancer", run, "progress"),
                         f"train-enhancer {run}: steps done of {cfg.steps}")
    start: list[int] = []

    def on_step(step: int, total: int, row: dict | None) -> None:
        if row is None:
            start.append(step)
        progress(step, total)

    result = train_enhancer(cfg, progress=False, on_step=on_step)
    progress.finish()
    table = _loss_table(run / "loss.csv")
    res = {"out": str(run), "checkpoint": result.checkpoint, "start_step": start[0] if start else result.step,
           "step": result.step, "steps": cfg.steps, "last": _last_row(table), "perceptual": result.perceptual,
           "export": None, "sha256": None, "card": None, "flow_run_id": _flow_run_id()}
    if export:
        digest, config, step = export_enhancer(result.checkpoint, export)
        write_json_atomic(run / "export.json", {"file": str(export), "sha256": digest, "step": step,
                                                "arch": vars(config)})  # as gsp train-enhancer --export
        res.update(export=str(export), sha256=digest)
        per = f"{result.perceptual['backbone']} {result.perceptual['layer']}" if result.perceptual else "off"
        res["card"] = str(_model_card(
            Path(export), "enhancer", name=Path(export).stem, sha256=digest, step=step, run=run,
            arch=f"INN-RSIC: {config.blocks} blocks, coupling growth {config.coupling_growth}, CGM growth "
                 f"{config.cgm_growth}; preset {cfg.preset}, L_per {per}",
            data=f"{pairs} (codec {json.dumps(read_pairs(pairs)[1].get('codec'), default=str)})",
            options=cfg.as_dict(), last=res["last"]))
    _publish("train-enhancer", run, table, "loss", f"train-enhancer {run}: loss.csv (at most {LOSS_TABLE_ROWS} "
             "rows, evenly spaced)", _training_report(f"train-enhancer: `{run.name}`", res, cfg.as_dict()))
    return res


@flow(name="evaluate", validate_parameters=False, flow_run_name=job_run_name,
      description="The paper's evaluation (ELIC then the enhancer at each rate point) on an image folder, into a "
      "run folder under the runs root; optionally the perception-distortion sweep.")
def evaluate_job(images: DatasetPath, out: RunFolder | None = None, rate_points: list[str] | None = None,
                 temperature: Annotated[float | None, Field(ge=0)] = None,
                 strength: Annotated[float | None, Field(gt=0, le=1)] = None,
                 limit: Annotated[int | None, Field(ge=1)] = None, workers: Annotated[int, Field(ge=1)] = 1,
                 seed: int = 0, reference: DatasetPath | None = None, sweep: SweepOptions | None = None,
                 tile_size: Annotated[int, Field(ge=0, le=4096, multiple_of=64)] = 0,
                 decode_mode: Literal["tile", "mosaic"] | None = None, enhancer: ModelChoice | None = None) -> dict:
    """``gsp evaluate IMAGES -o OUT [--rate-points ...] [--sweep ...] [--tile-size PX --decode-mode M]
    [--enhancer NAME_OR_FILE]`` as a flow: resumes from ``OUT/per_image.csv`` (and ``perception_distortion.csv``)."""
    return run_checked(evaluate_job, dict(locals()), _evaluate)


def _evaluate(images, out, rate_points, temperature, strength, limit, workers, seed, reference, sweep, tile_size=0,
              decode_mode=None, enhancer=None) -> dict:
    from flows.report import table_rows

    from .evaluation import Tiling, check_sweep_only, evaluate_folder, resolve_rate_points

    run = _out(out, "evaluate")
    spec = sweep.spec() if sweep is not None else None  # bad sweep options fail before any work
    points = resolve_rate_points(rate_points, temperature=temperature, enhancer=enhancer, strength=strength)
    only = spec is not None and sweep.only
    if only:
        check_sweep_only(tile_size, reference, "sweep.only")
        if temperature is not None or strength is not None:
            raise ConfigError("temperature / strength set the operating point of the evaluation table, which "
                              "sweep.only leaves out; sweep other points with sweep.temperatures / sweep.strengths")
    report, table = "", []
    result = {"out": str(run), "images": 0, "computed": 0, "skipped": 0, "rate_points": [p.name for p in points],
              "files": {}, "flow_run_id": _flow_run_id()}
    if not only:
        progress = _Progress(_key("evaluate", run, "progress"),
                             f"evaluate {run}: image evaluations done" + (" (then the sweep)" if spec else ""))
        res = evaluate_folder(images, run, points, limit=limit, workers=workers, seed=seed, reference=reference,
                              on_progress=progress, tiling=Tiling.of(tile_size, decode_mode))
        progress.finish()
        report = Path(res.files["markdown"]).read_text()
        table = table_rows(res.summary)
        result.update(images=res.images, computed=res.computed, skipped=res.skipped, files=dict(res.files))
    if spec is not None:
        from .evaluation import sweep_folder

        replaced = temperature is not None or strength is not None  # the sweep marks the registry's point
        chosen = resolve_rate_points(rate_points, enhancer=enhancer) if replaced else points
        sweep_progress = _Progress(_key("evaluate", run, "sweep-progress"), f"evaluate {run}: sweep rows done")
        sw = sweep_folder(images, run, chosen, spec, limit=limit, workers=workers, seed=seed,
                          on_progress=sweep_progress)
        sweep_progress.finish()
        from prefect.artifacts import create_table_artifact

        create_table_artifact(table_rows(sw.summary), key=_key("evaluate", run, "sweep"),
                              description=f"evaluate {run}: perception-distortion sweep")
        report += ("\n\n" if report else "") + Path(sw.files["sweep_markdown"]).read_text()
        result["files"].update(sw.files)
        result["sweep"] = {"computed": sw.computed, "skipped": sw.skipped}
        if only:
            table = table_rows(sw.summary)
            result["images"] = sw.images
    header = (f"Run folder `{run}`: " + (f"the sweep only ({sw.computed} rows computed, {sw.skipped} already there)"
                                         if only else f"{result['computed']} image evaluations computed, "
                                         f"{result['skipped']} already there (resumed)")
              + ". Files: " + ", ".join(f"`{v}`" for v in result["files"].values()) + "\n\n")
    _publish("evaluate", run, table, "evaluation", f"evaluate {run}: " + ("perception-distortion sweep means" if only
             else "means per rate point and product"), header + report)
    return result


def _export_run_name() -> str:
    from prefect.runtime import flow_run

    from flows.names import run_refused

    product = Path(str(flow_run.parameters.get("product", "?")))
    name = f"export {product.parent.name}/{product.name}"
    return f"refused: {name}" if run_refused(dict(flow_run.parameters or {})) else name


@flow(name="export-product", validate_parameters=False, flow_run_name=_export_run_name,
      description="Export a complete product: its Cloud-Optimized GeoTIFF beside it (<version>.<array>.tif) "
      "and/or its STAC Item in the station catalogue (gsp export).")
def export_job(product: ProductsDir, cog: bool = True, array: Literal["enhanced", "decoded"] | None = None,
               overviews: bool = True, stac: bool = True) -> dict:
    """``gsp export PRODUCT --cog <beside it> --stac`` as a flow (a product made before ``--cog`` existed, or
    whose COG or Item an operator wants rewritten); the result is a markdown artifact."""
    return run_checked(export_job, dict(locals()), _export)


def _export(product, cog, array, overviews, stac) -> dict:
    from groundstation.product import arrays
    from groundstation.stac import cog_path

    from flows.report import artifact_key

    from .export import export_product

    chosen = array or ("enhanced" if "enhanced" in arrays(product) else "decoded")
    result = export_product(product, cog=cog_path(product, chosen) if cog else None, array=chosen,
                            overviews=overviews, stac=stac)
    lines = [f"# Export of `{product}`", ""]
    if "cog" in result:
        c = result["cog"]
        lines.append(f"- COG `{c['path']}`: {c['array']}, {c['width']}x{c['height']} px, overviews "
                     f"{c['overviews'] or 'none'}, {c['bytes']} bytes, {100 * c['valid_fraction']:.1f} % valid")
    if "stac_item" in result:
        lines.append(f"- STAC Item `{result['stac_item']}`")
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact("\n".join(lines) + "\n", key=artifact_key(f"export-{Path(product).stem}", "report"),
                             description=f"export of {product}")
    return result


# -------------------------------------------------------------------------------------------- deployments

def job_deployments(*, name: str | None = None) -> list:
    """The deployments of the four flows (``RunnerDeployment``s for :func:`flows.deployments.serve_station`),
    named after the station, ``out`` defaulting to ``<runs root>/<flow>`` and the options to the registry's
    (see the module docstring)."""
    from prefect.types.entrypoint import EntrypointType

    from groundstation.registry import load_registry
    from groundstation.roots import StationRoots

    station = load_station()
    runs = StationRoots.from_config(station.roots).folder("runs")
    tags = ["gsp", f"station:{station.station}", "training"]
    common = dict(name=name or station.station, tags=tags, entrypoint_type=EntrypointType.MODULE_PATH)
    try:
        points = list(load_registry().rate_points) or None
    except GSPError:
        points = None
    return [
        train_codec_job.to_deployment(
            parameters={"out": str(runs / "train-codec"),
                        "options": CodecTrainOptions.from_registry().model_dump(mode="json")},
            description=f"Train or resume a codec (image folders under the archive or {runs}) into a run folder "
            f"under {runs}; optionally export it", **common),
        train_enhancer_job.to_deployment(
            parameters={"out": str(runs / "train-enhancer"),
                        "options": EnhancerTrainOptions.from_registry().model_dump(mode="json")},
            description=f"Train or resume an enhancer on a pairs folder (gsp make-pairs) into a run folder under "
            f"{runs}; optionally export it", **common),
        evaluate_job.to_deployment(
            parameters={"out": str(runs / "evaluate"), "rate_points": points},
            description=f"Evaluate the registry's rate points on an image folder into a run folder under {runs}",
            **common),
        export_job.to_deployment(
            description="Export a complete product (under the products root): its COG beside it and its STAC "
            "Item in the station catalogue", **{**common, "tags": ["gsp", f"station:{station.station}", "export"]}),
    ]
