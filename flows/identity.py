"""The identity of a run, decided in one place: pass header -> models -> operating point -> product version ->
product paths.

:func:`resolve_run` is the only function that makes that decision; ``process-pass``, ``apply-supplement``,
``reprocess-archive``, the run namer (:mod:`flows.names`), the pre-flight checks and the warm-up of the
workers all ask it, so they cannot disagree on which product a run writes. The pass header is parsed once per
file and process (:func:`pass_header`).

``version`` names what decides the product's pixels (:func:`product_version`): codec and enhancer (name +
sha256 prefix), seed, temperature and halo, the pixel-synthesis mode and the decode mode. Reprocessing with another enhancer
writes a new product beside the old one; the same models again find the product complete.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from groundstation.container import PassHeader, PassReader
from groundstation.errors import CheckpointError, ConfigError, ProductError, SceneError
from groundstation.registry import FALLBACK_TEMPERATURE, OperatingPoint, resolve_model

from .options import ProcessOptions

__all__ = ["FALLBACK_TEMPERATURE", "ModelRef", "ProductPaths", "RunPlan", "check_reference", "preflight",
           "product_paths", "product_version", "pass_header", "refuse_supplement", "resolve_run",
           "with_operating_point"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: str
    sha256: str
    info: dict  # architecture / tables, for provenance (empty when the checkpoint was not loaded)


@dataclass(frozen=True)
class ProductPaths:
    folder: Path
    product: Path
    metrics: Path
    report: Path
    state: Path
    lock: Path
    history: Path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "x"


def product_paths(out_dir: str | Path, pass_id: str, version: str) -> ProductPaths:
    """Where a product of ``pass_id`` and ``version`` and its companions live under ``out_dir``."""
    out = Path(out_dir)
    folder = out / _slug(pass_id)
    return ProductPaths(folder=folder, product=folder / f"{version}.zarr",
                        metrics=folder / f"{version}.metrics.parquet", report=folder / f"{version}.report.md",
                        state=folder / f"{version}.state", lock=folder / f"{version}.lock",
                        history=out / "history.parquet")


def mosaic_g_s(codec_sha256: str, opts: ProcessOptions) -> str | None:
    """sha256 of the g_s fine-tuned for mosaic synthesis that a run with ``opts`` uses for this codec: the
    registry's (:func:`groundstation.registry.mosaic_g_s_sha256`) in decode mode ``mosaic`` with
    ``mosaic_synthesis`` ``tuned``; None (the codec's own g_s) otherwise."""
    if opts.decode_mode != "mosaic" or opts.mosaic_synthesis != "tuned":
        return None
    from groundstation.registry import mosaic_g_s_sha256

    return mosaic_g_s_sha256(codec_sha256)


def product_version(codec: ModelRef, enhancer: ModelRef | None, opts: ProcessOptions) -> str:
    """A name for what decides the product's pixels: codec and enhancer (name + sha256 prefix), seed,
    temperature, strength (``-a<strength>``, only where it is not 1) and halo (``-px64`` for float64 pixel
    synthesis, ``-mosaic`` for synthesis over the latent mosaic, then ``-gs<sha256 prefix>`` when a g_s fine-tuned for it runs that synthesis; tile-wise products
    keep the names they had before the mosaic mode). E.g.
    ``tiny-pt-1a2b3c4d-mosaic__sr-demo-5e6f7a8b-s0-t1-h32``."""
    if enhancer is not None and (opts.temperature is None or opts.strength is None):
        raise ValueError("the operating point must be decided (with_operating_point) before the version is named")
    gs = mosaic_g_s(codec.sha256, opts)
    base = (f"{_slug(codec.name)}-{codec.sha256[:8]}" + ("-px64" if opts.synthesis == "float64" else "")
            + ("-mosaic" if opts.decode_mode == "mosaic" else "") + (f"-gs{gs[:8]}" if gs else ""))
    if enhancer is None:
        return f"{base}__decoded-only"
    temp = format(opts.temperature, "g").replace(".", "p")
    strength = "" if opts.strength == 1 else "-a" + format(opts.strength, "g").replace(".", "p")
    return f"{base}__{_slug(enhancer.name)}-{enhancer.sha256[:8]}-s{opts.seed}-t{temp}{strength}-h{opts.halo}"


def with_operating_point(opts: ProcessOptions, enh: ModelRef | None, *, say=None) -> ProcessOptions:
    """``opts`` with its operating point decided, each knob on its own: the temperature and the strength given,
    else those of the registry's operating point for this enhancer's rate point (chosen on a validation subset,
    docs/evaluation.md), else :data:`FALLBACK_TEMPERATURE` and strength 1 (all of the enhancer's change).
    ``say``: a logger told which rule decided (the flow's; None for quiet callers such as the run namer)."""
    if opts.temperature is not None and opts.strength is not None:
        return opts
    if enh is None:
        point = OperatingPoint(None, FALLBACK_TEMPERATURE, 1.0)
    else:
        from groundstation.registry import load_registry

        point = load_registry().operating_point(enh.sha256, opts.temperature, opts.strength)
        if say is not None:
            say.info("enhancer %s: %s", enh.name, point.describe())
    return opts.model_copy(update={"temperature": point.temperature, "strength": point.strength})


@dataclass(frozen=True)
class RunPlan:
    """Everything that identifies a run of one pass: header, models, decided options, version, paths."""

    header: PassHeader
    codec: ModelRef
    enhancer: ModelRef | None
    options: ProcessOptions  # with the operating point (temperature, strength) decided
    version: str
    paths: ProductPaths | None  # None when no products folder was given (naming, pre-flight)

    @property
    def arrays(self) -> tuple[str, ...]:
        return ("decoded", "enhanced") if self.enhancer else ("decoded",)

    @property
    def decode_provenance(self) -> dict:
        """How the product's pixels were made from the tiles' symbols (the run summary's ``decode``)."""
        from groundstation.synthesis import DEFAULT_CORE_TILES, HALO_LATENT

        opts = self.options
        out = {"mode": opts.decode_mode, "synthesis": opts.synthesis, "entropy": self.header.codec.entropy}
        if opts.decode_mode == "mosaic":
            out.update({"core_tiles": DEFAULT_CORE_TILES, "halo_latent": HALO_LATENT,
                        "mosaic_g_s_sha256": self.mosaic_g_s})
        return out

    @property
    def mosaic_g_s(self) -> str | None:
        """sha256 of the g_s fine-tuned for mosaic synthesis this run uses (None: the codec's own)."""
        return mosaic_g_s(self.codec.sha256, self.options)

    @property
    def label(self) -> str:
        """The run's name in the UI: ``<pass_id> @ <version>``."""
        return f"{self.header.pass_id} @ {self.version}"

    @property
    def warm_models(self) -> tuple[tuple[str, str], tuple[str, str] | None]:
        """``(path, sha256)`` of the codec and enhancer the workers load (for their warm-up)."""
        enh = (self.enhancer.path, self.enhancer.sha256) if self.enhancer else None
        return (self.codec.path, self.codec.sha256), enh


@lru_cache(maxsize=64)
def _header(path: str, size: int, mtime_ns: int) -> PassHeader:
    return PassReader(path).header


def pass_header(path: str | Path) -> PassHeader:
    """The pass header of ``path``, parsed once per file version and process (size and mtime key the cache, so
    a file that grows or changes is parsed again). A bad header raises PassFormatError."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return PassReader(p).header  # raises the reader's clear error for a missing file
    return _header(str(p), st.st_size, st.st_mtime_ns)


def _enhancer_checkpoint(opts: ProcessOptions) -> tuple[str, Path, str | None]:
    """(name, checkpoint, expected sha256) of the enhancer to use; a clear error when there is none."""
    try:
        name, path, sha, _ = resolve_model(opts.enhancer, "enhancer")
    except ConfigError as exc:
        if opts.enhancer is None:
            raise ConfigError(
                f"no enhancer given and none found in the registry ({exc}); pass --enhancer NAME (a registry "
                "name or a checkpoint file), or --no-enhance to write a decoded-only product") from None
        raise
    return name, path, sha


def _models(header: PassHeader, opts: ProcessOptions, load: bool) -> tuple[ModelRef, ModelRef | None]:
    """Codec and enhancer of a run. ``load``: read and check the checkpoints (a wrong or broken file fails here,
    before any work); else only resolve names and hashes (the run namer, pre-flight, warm-up)."""
    name, path, expected, _ = resolve_model(opts.codec or header.codec.name, "codec")
    if expected and expected != header.codec.sha256:
        raise CheckpointError(
            f"codec {name!r} in the registry has sha256 {expected[:16]}..., the pass was encoded with "
            f"{header.codec.sha256[:16]}... ({header.codec.name}); pass --codec with the matching checkpoint")
    if load:  # checked as the workers load it, without building it here (they do)
        from groundstation.codec import inspect_codec

        info = inspect_codec(path, header.codec.sha256)
        codec = ModelRef(name, str(path), info.sha256, {"arch": info.arch.as_dict(), "tables": info.tables})
    else:
        codec = ModelRef(name, str(path), header.codec.sha256, {})
    if not opts.enhance:
        return codec, None
    ename, epath, esha = _enhancer_checkpoint(opts)
    if load:
        from enhancer.checkpoint import load_enhancer

        _, config, digest = load_enhancer(epath, esha)
        return codec, ModelRef(ename, str(epath), digest,
                               {"config": asdict(config), "receptive_radius": config.receptive_radius})
    if esha is None:
        from groundstation.fileio import sha256_file

        if not Path(epath).is_file():
            raise CheckpointError(f"enhancer checkpoint {epath} not found")
        esha = sha256_file(epath)
    return codec, ModelRef(ename, str(epath), esha, {})


def resolve_run(header: PassHeader, options: ProcessOptions | None = None, out_dir: str | Path | None = None, *,
                load: bool = True, say=None) -> RunPlan:
    """The run identity of ``header`` under ``options``: models (loaded and checked when ``load``), the
    operating point (``say``: a logger told which rule decided the temperature and strength), the product version and,
    with ``out_dir``, the product's paths."""
    opts = options or ProcessOptions()
    codec, enh = _models(header, opts, load)
    opts = with_operating_point(opts, enh, say=say)
    version = product_version(codec, enh, opts)
    paths = product_paths(out_dir, header.pass_id, version) if out_dir is not None else None
    return RunPlan(header=header, codec=codec, enhancer=enh, options=opts, version=version, paths=paths)


def refuse_supplement(header: PassHeader, pass_path) -> None:
    """A supplement (resent tiles of a pass) is applied to the pass's product, never processed as a pass."""
    if header.supplement is not None:
        raise ProductError(
            f"{Path(pass_path).name} is a supplement (tiles {', '.join(map(str, header.supplement.tiles))} of "
            f"pass {header.pass_id} resent), not a pass: apply it to the pass's product with `gsp supplement "
            f"{pass_path} --products DIR` or drop it into the inbox")


def check_reference(reference: str | None, header: PassHeader) -> None:
    """The reference scene (``--reference``) exists and has the pass's size and bands."""
    if reference is None:
        return
    import rasterio

    if not Path(reference).is_file():
        raise SceneError(f"--reference {reference}: no such file")
    with rasterio.open(reference) as ds:
        s = header.scene
        if (ds.width, ds.height) != (s.width, s.height):
            raise SceneError(f"--reference {reference} is {ds.width}x{ds.height} but pass {header.pass_id} is "
                             f"{s.width}x{s.height}; give the scene this pass was encoded from")
        if ds.count < max(header.bands.selection):
            raise SceneError(f"--reference {reference} has {ds.count} bands, the pass used bands "
                             f"{header.bands.selection}; give the scene this pass was encoded from")


def preflight(pass_path: str | Path, opts: ProcessOptions, out_dir: str | Path | None = None) -> RunPlan:
    """Cheap checks before anything starts (no API, no cluster): the pass header parses and is no supplement,
    the models can be found, the reference fits. Returns the run's identity (checkpoints not loaded: the flow
    loads and checks them)."""
    header = pass_header(pass_path)
    refuse_supplement(header, pass_path)
    plan = resolve_run(header, opts, out_dir, load=False)
    check_reference(opts.reference, header)
    return plan
