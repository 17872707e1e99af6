"""Prefect flows of the ground station (entry points; the work itself is in :mod:`tasks`).

* :mod:`flows.process_pass` - ``process-pass``: one pass -> versioned Zarr product, metrics, report.
* :mod:`flows.inbox` - ``watch-inbox``: find complete passes in an inbox and process each exactly once.
* :mod:`flows.reprocess` - ``reprocess-archive``: new product versions for an archive of passes.
* :mod:`flows.options` - the typed options of a run (validated before it starts).
* :mod:`flows.deployments` - every job as a deployment (``gsp serve``, ``prefect.yaml``).
* :mod:`flows.access` - when the station's roots are in force; the root-checked path parameter types.
* :mod:`flows.names`, :mod:`flows.events` - run/task names and tags; the events automations react to.
* :mod:`flows.runtime` - the Prefect API a run talks to (ephemeral, a server, or a local server for serving).
* :mod:`flows.cluster` - the Dask cluster: a LocalCluster or an existing scheduler, GPU resources.
* :mod:`flows.scheduler` - the batch scheduler (dependencies, bounded in-flight, failures recorded).

See docs/operations.md for running on a Dask cluster with GPU workers and against a Prefect server.
Importing this package is cheap; the submodules import Prefect, Dask and torch.
"""
