"""Throughput of the enhancer's inverse (the inference direction), in megapixels per second.

Times ``model.inverse(image, z)`` on one tile per configuration under torch.inference_mode, after warm-up
runs, and reports the median. The weights are random (enhancer.testing.surrogate_enhancer): the cost does
not depend on their values.

    python benchmarks/enhancer_throughput.py --configs demo reference --size 256 --reps 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import enhancer  # noqa: F401
except ModuleNotFoundError:  # run as a script from a checkout whose editable install predates the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enhancer.model import EnhancerConfig
from enhancer.testing import surrogate_enhancer
from _results import write_result  # noqa: E402  (benchmarks/, on sys.path as the script's folder)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "enhancer_throughput.json"
CONFIGS = {"demo": EnhancerConfig.demo, "reference": EnhancerConfig.reference}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["demo", "reference"])
    parser.add_argument("--size", type=int, default=256, help="tile height and width in pixels (even)")
    parser.add_argument("--batch", type=int, default=1, help="tiles per call")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    return parser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inverse(config: EnhancerConfig, size: int, batch: int, reps: int, warmup: int,
                 device: torch.device) -> list[float]:
    """Seconds per call of ``inverse`` on a ``(batch, 3, size, size)`` tile, one entry per repetition."""
    model = surrogate_enhancer(config, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=gen).to(device)
    z = torch.randn(batch, 3, size, size, generator=gen).to(device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + reps):
            _sync(device)
            start = time.perf_counter()
            model.inverse(image, z)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.size < 2 or args.size % 2:
        raise SystemExit(f"--size must be even and >= 2, got {args.size}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.configs:
        config = CONFIGS[name]()
        times = time_inverse(config, args.size, args.batch, args.reps, args.warmup, device)
        median = statistics.median(times)
        megapixels = args.batch * args.size * args.size / 1e6
        params = sum(p.numel() for p in surrogate_enhancer(config).parameters())
        row = {
            "config": name,
            **dataclasses.asdict(config),
            "params": params,
            "tile_px": args.size,
            "batch": args.batch,
            "median_s": median,
            "min_s": min(times),
            "megapixels_per_s": megapixels / median,
            "ms_per_256px_tile": 1000 * median / (megapixels / 0.065536),
        }
        rows.append(row)
        print(f"{name:9s} ({params:,} params): {median:.3f} s per {args.batch}x{args.size}x{args.size} "
              f"(min {min(times):.3f}), {row['megapixels_per_s']:.3f} MP/s")
    result = {
        "benchmark": "enhancer_throughput",
        "device": str(device),
        "threads": args.threads,
        "reps": args.reps,
        "rows": rows,
    }
    write_result(args.output, result)
    return result


if __name__ == "__main__":
    main()
