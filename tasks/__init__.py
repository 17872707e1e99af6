"""Prefect tasks of the ground-station flows: small, typed, each handling a *batch* of tiles.

Tasks take references (paths, tile indices, pixel windows, checkpoint path + sha256) and return small dicts;
the Zarr product and the done markers are written by the tasks themselves, so nothing big crosses processes.

* :mod:`tasks.plan` - validate a pass container, plan decode/enhance/evaluate batches (pure functions).
* :mod:`tasks.decode` - ``decode_tiles``: ELIC tiles -> ``decoded`` + ``valid`` chunks.
* :mod:`tasks.enhance` - ``enhance_windows``: halo windows of ``decoded`` -> ``enhanced`` cores.
* :mod:`tasks.evaluate` - ``evaluate_tiles``: full-reference metrics against the source scene.
* :mod:`tasks.export` - ``write_cog``: the run's Cloud-Optimized GeoTIFF beside the product (``cog`` option).
* :mod:`tasks.workers` - per-process model caches (keyed by checkpoint sha256) and device choice.
* :mod:`tasks.state` - atomic JSON, done markers, locks, claims.
"""
