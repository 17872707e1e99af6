"""``gsp``: the ground-station command line. Thin: parses arguments and calls the library.

One module per command group, each with ``register(subparsers)`` and ``COMMANDS`` (name -> handler):
:mod:`.scenes` (encode, inspect, decode, demo), :mod:`.station` (process, serve, reprocess, supplement),
:mod:`.products` (export), :mod:`.training` (make-pairs, train-codec, train-enhancer), :mod:`.enhancer`
(enhance, models), :mod:`.evaluate` (evaluate). Handlers import torch, Prefect, Dask and CompressAI only when
they run, so ``gsp --help`` and ``gsp inspect`` start fast.

Exit status: 0 success; 3 the product was written but some tiles were lost (listed for retransmission);
2 an error the operator can act on (bad input, wrong checkpoint; the message says what to do); 1 a bug.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import enhancer, evaluate, products, scenes, station, training
from .console import OWN_LOGGERS, ConsolePolicy, configure_logging

__all__ = ["COMMANDS", "ConsolePolicy", "OWN_LOGGERS", "build_parser", "configure_logging", "main"]

#: Every command group of ``gsp``, in the order ``--help`` lists them.
COMMAND_GROUPS = (scenes, evaluate, training, enhancer, station, products)
#: Every command of ``gsp``, by name.
COMMANDS = {name: handler for group in COMMAND_GROUPS for name, handler in group.COMMANDS.items()}
#: Commands that run Prefect flows on Dask.
ORCHESTRATED = frozenset({"demo", "process", "serve", "reprocess", "supplement"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gsp",
        description="Satellite ground-station pipeline: encode scenes into pass containers (the satellite side, "
        "simulated), inspect, decode and enhance passes into georeferenced Zarr products under Prefect on Dask, serve "
        "the station's jobs to the Prefect UI, train and evaluate codecs and enhancers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 ok; 3 product written but tiles lost (see the list); 2 bad input or configuration; 1 bug.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("--station", default=None, help="station configuration YAML (default: configs/station.yaml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ORCHESTRATED:
        refused = _run(args, station.check_inputs)  # a file that is no pass: refused in a second, before Prefect
        if refused:
            return refused
        # Prefect and Dask configure logging when imported: import them first, then set the console policy
        import distributed  # noqa: F401
        import prefect  # noqa: F401
    configure_logging(args.verbose)
    if not args.station:
        return _run(args)
    from groundstation.config import STATION_ENV

    station_before = os.environ.get(STATION_ENV)
    # an environment variable: worker processes and served runs read the same station
    os.environ[STATION_ENV] = str(Path(args.station).resolve())
    try:
        return _run(args)
    finally:  # main() may run in a longer-lived process (tests, notebooks): leave its environment as found
        if station_before is None:
            os.environ.pop(STATION_ENV, None)
        else:
            os.environ[STATION_ENV] = station_before


def _run(args: argparse.Namespace, handler=None) -> int | None:
    """``handler`` (default: the command's) on ``args``; a GSPError is its message and exit status."""
    from groundstation.errors import GSPError

    try:
        return (handler or COMMANDS[args.command])(args)
    except GSPError as exc:
        print(f"gsp {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
