"""What a checkpoint file is: codec or enhancer, which format and container, whether it loads strictly, and
which registry entries name it (``gsp models check``)."""

from __future__ import annotations

from pathlib import Path

from groundstation.checkpoints import read_checkpoint, unwrap_state_dict
from groundstation.errors import ConfigError

__all__ = ["inspect_checkpoint"]


def _registry_names(digest: str) -> list[str]:
    from groundstation.registry import load_registry

    try:
        reg = load_registry()
    except ConfigError:
        return []
    return sorted(name for name, e in reg.models.items() if e.sha256 == digest)


def inspect_checkpoint(path: str | Path) -> dict:
    """Detect what a checkpoint file is, load it strictly, and describe it.

    ``kind``: ``codec`` or ``enhancer``; ``format``: ``compressai``, ``inn-rsic-elic`` (the authors' ELIC
    names) or ``inn-rsic-enhancer``; ``container``: a raw state dict or a training wrapper (its key and the
    other entries); ``module_prefix``: DataParallel's ``module.`` names. Raises CheckpointError (naming the
    first wrong keys) when the file does not load strictly.
    """
    from groundstation.codec import detect_codec_format, load_codec

    path = Path(path)
    obj, digest = read_checkpoint(path)
    read = unwrap_state_dict(obj, str(path))
    sd = read.tensors
    container, extra, prefixed = read.container, read.wrapper_entries, read.module_prefix
    info: dict = {"file": str(path), "sha256": digest, "bytes": path.stat().st_size, "container": container,
                  "wrapper_entries": extra, "module_prefix": prefixed, "entries": len(sd),
                  "dtypes": sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})}
    if any(k.startswith(("operations_gaussian.", "guassianize.")) for k in sd):
        from enhancer.checkpoint import load_enhancer

        model, config, _ = load_enhancer(path)
        stored = sum(t.numel() for t in model.state_dict().values())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        info.update(kind="enhancer", format="inn-rsic-enhancer", architecture="inn-rsic",
                    arch={"blocks": config.blocks, "coupling_growth": config.coupling_growth,
                          "cgm_growth": config.cgm_growth, "receptive_radius_px": config.receptive_radius},
                    stored_values=stored, parameters=trainable)
    else:
        fmt = detect_codec_format(sd)  # raises, naming the first keys, for anything that is no ELIC
        loaded = load_codec(path)
        model = loaded.model
        info.update(kind="codec", format="compressai" if fmt == "compressai" else "inn-rsic-elic",
                    architecture="elic2022-chandelier", arch=loaded.arch.as_dict(),
                    parameters=sum(p.numel() for p in model.parameters()),
                    buffers=sum(b.numel() for b in model.buffers()),
                    entropy_tables=("filled in the file, used as stored" if loaded.tables == "filled" else
                                    "empty in the file (training checkpoint): computed with update(force=True) on "
                                    "load; bitstreams are consistent within this project only"))
    info["registry"] = _registry_names(digest)
    return info
