"""The console of ``gsp``: which log lines and warnings a verbosity shows."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["OWN_LOGGERS", "ConsolePolicy", "configure_logging"]


#: The station's own loggers: shown from INFO by default, from DEBUG with -v. Everything else (Prefect's
#: engine, HTTP requests, Dask's cluster start-up, zarr...) only from WARNING, unless -vv.
OWN_LOGGERS = ("gsp", "groundstation", "flows", "tasks", "enhancer", "prefect.flow_runs")


class ConsolePolicy(logging.Filter):
    """What the console shows at a verbosity (a filter on the handler: library imports that reset logger
    levels, as Prefect's and Dask's logging set-ups do, cannot bring their chatter back)."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbosity >= 2:
            return True
        own = record.name in OWN_LOGGERS or record.name.startswith(tuple(n + "." for n in OWN_LOGGERS))
        if own:
            if record.name == "prefect.flow_runs" and record.getMessage().startswith("Finished in state Completed"):
                return False  # the command prints its own result line
            return record.levelno >= (logging.DEBUG if self.verbosity >= 1 else logging.INFO)
        return record.levelno >= logging.WARNING


def configure_logging(verbosity: int) -> None:
    """Console output by verbosity: 0 the station's progress and results; 1 (-v) also its debug lines;
    2 (-vv) every library's log lines and Python warnings. Safe to call again after imports.

    Library warnings (deprecations, zarr's format notes) are for developers: hidden below -vv, also in the Dask
    worker processes this command starts (they inherit the environment set here).
    """
    import warnings

    root = logging.getLogger()
    for h in list(root.handlers):  # ours from an earlier call, and Prefect's console handler; not a test's capture
        if getattr(h, "_gsp_console", False) or type(h).__name__ == "PrefectConsoleHandler" or (
                type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout)):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._gsp_console = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(ConsolePolicy(verbosity))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    for name in OWN_LOGGERS + ("prefect", "distributed", "httpx", "zarr", "numcodecs"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    if verbosity < 2:
        warnings.filterwarnings("ignore")
        os.environ["PYTHONWARNINGS"] = "ignore"
        # Dask workers print Prefect's task-run lines on this console; the UI (API handler) still gets them
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # Prefect's server telemetry has no network to reach here and its sqlite writes collide with the runs'
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
