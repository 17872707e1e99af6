"""Ground-station pipeline: ELIC pass containers, INN-RSIC enhancement, georeferenced Zarr products."""

__version__ = "0.1.0"
