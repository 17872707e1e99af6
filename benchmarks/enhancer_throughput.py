"""Throughput of the enhancer's inverse (the inference direction) against the machine's own conv peak.

In one run, interleaved (round robin over all variants per repetition, so that load from other processes
hits them alike):

* the conv peak: a wide 3x3 convolution (128 -> 128 channels, 128x128, batch 1), NCHW and channels_last;
* per configuration (demo, reference) and batch size: ``model.inverse`` (the plain NCHW path) and
  ``model.inverse_fast`` (channels_last end to end, the default of enhancer.inference), and with ``--compile``
  also ``torch.compile(model.inverse_fast)`` (compile time reported).

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on ``inverse`` (convolutions and matrix
products only: the elementwise work is not counted). GFLOP/s = counted FLOPs / median seconds; the percent
of peak is against the faster (channels_last) conv peak. The weights are random
(enhancer.testing.surrogate_enhancer): the cost does not depend on their values.

    python benchmarks/enhancer_throughput.py --configs demo reference --batches 1 4 --reps 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

try:
    import enhancer  # noqa: F401
except ModuleNotFoundError:  # run as a script from a checkout whose editable install predates the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enhancer.inference import tune_cpu_worker
from enhancer.model import EnhancerConfig
from enhancer.testing import surrogate_enhancer
from _results import write_result  # noqa: E402  (benchmarks/, on sys.path as the script's folder)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "enhancer_throughput.json"
CONFIGS = {"demo": EnhancerConfig.demo, "reference": EnhancerConfig.reference}
PEAK_CHANNELS, PEAK_SIZE = 128, 128


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["demo", "reference"])
    parser.add_argument("--size", type=int, default=256, help="tile height and width in pixels (even)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="tiles per call")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--keep-heap", action=argparse.BooleanOptionalAction, default=True,
                        help="enhancer.inference.tune_cpu_worker(keep_heap=...): reuse freed activations from "
                             "the heap instead of fresh page-faulted mmaps (process-wide: affects every row)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile(inverse_fast) (inductor, CPU; compile time reported)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    return parser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@dataclasses.dataclass
class Case:
    name: str
    fn: Callable[[], object]
    flops: int
    pixels: int
    extra: dict
    times: list[float] = dataclasses.field(default_factory=list)


def _peak_cases(device: torch.device) -> list[Case]:
    c, s = PEAK_CHANNELS, PEAK_SIZE
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(c, c, 3, 1, 1).eval().to(device)
    x = torch.randn(1, c, s, s, generator=gen).to(device)
    conv_cl = torch.nn.Conv2d(c, c, 3, 1, 1).eval().to(device).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    flops = count_flops(lambda: conv(x))
    return [Case("peak conv3x3 NCHW", lambda: conv(x), flops, 0, {"layout": "NCHW"}),
            Case("peak conv3x3 channels_last", lambda: conv_cl(x_cl), flops, 0, {"layout": "channels_last"})]


def _enhancer_cases(name: str, config: EnhancerConfig, size: int, batch: int, device: torch.device,
                    compile_: bool) -> list[Case]:
    model = surrogate_enhancer(config, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=gen).to(device)
    z = torch.randn(batch, 3, size, size, generator=gen).to(device)
    flops = count_flops(lambda: model.inverse(image, z))
    extra = {"config": name, **dataclasses.asdict(config), "batch": batch, "tile_px": size,
             "params": sum(p.numel() for p in model.parameters())}
    cases = [Case(f"{name} b{batch} plain (inverse, NCHW)", lambda: model.inverse(image, z), flops,
                  batch * size * size, {**extra, "path": "plain"}),
             Case(f"{name} b{batch} fast (inverse_fast)", lambda: model.inverse_fast(image, z), flops,
                  batch * size * size, {**extra, "path": "fast"})]
    if compile_:
        compiled = torch.compile(model.inverse_fast)
        start = time.perf_counter()
        compiled(image, z)
        _sync(device)
        seconds = time.perf_counter() - start
        print(f"  torch.compile(inverse_fast) {name} b{batch}: first call (compile) {seconds:.1f} s", flush=True)
        cases.append(Case(f"{name} b{batch} compiled fast", lambda: compiled(image, z), flops,
                          batch * size * size, {**extra, "path": "compiled", "compile_s": seconds}))
    return cases


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.size < 2 or args.size % 2:
        raise SystemExit(f"--size must be even and >= 2, got {args.size}")
    tuned = tune_cpu_worker(args.threads, keep_heap=args.keep_heap)
    print(f"threads {torch.get_num_threads()}, keep_heap {tuned.get('keep_heap', False)}", flush=True)
    device = torch.device(args.device)
    with torch.inference_mode():
        cases = _peak_cases(device)
        for name in args.configs:
            for batch in args.batches:
                cases += _enhancer_cases(name, CONFIGS[name](), args.size, batch, device, args.compile)
        for i in range(args.warmup + args.reps):  # round robin: every variant once per repetition
            for case in cases:
                _sync(device)
                start = time.perf_counter()
                case.fn()
                _sync(device)
                if i >= args.warmup:
                    case.times.append(time.perf_counter() - start)
    peak = {c.extra["layout"]: c.flops / statistics.median(c.times) / 1e9 for c in cases[:2]}
    best_peak = max(peak.values())
    rows = []
    print(f"{'case':44s} {'median s':>9s} {'min s':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'% peak':>7s} {'MP/s':>7s}")
    for case in cases:
        median = statistics.median(case.times)
        gflops = case.flops / median / 1e9
        row = {"case": case.name, **case.extra, "flops": case.flops, "median_s": median, "min_s": min(case.times),
               "times_s": case.times, "gflop_per_s": gflops, "percent_of_peak": 100 * gflops / best_peak}
        if case.pixels:
            row["megapixels_per_s"] = case.pixels / median / 1e6
            row["ms_per_256px_tile"] = 1000 * median * 65536 / case.pixels
        rows.append(row)
        mps = f"{row['megapixels_per_s']:7.3f}" if case.pixels else " " * 7
        print(f"{case.name:44s} {median:9.4f} {min(case.times):8.4f} {case.flops / 1e9:7.2f} {gflops:8.1f} "
              f"{row['percent_of_peak']:6.1f}% {mps}")
    for name in args.configs:
        for batch in args.batches:
            by_path = {r["path"]: r for r in rows if r.get("config") == name and r.get("batch") == batch}
            if "plain" in by_path and "fast" in by_path:
                print(f"{name} b{batch}: fast / plain speed-up {by_path['plain']['median_s'] / by_path['fast']['median_s']:.2f}x")
    result = {
        "benchmark": "enhancer_throughput",
        "device": str(device),
        "threads": args.threads,
        "keep_heap": bool(tuned.get("keep_heap", False)),
        "reps": args.reps,
        "peak_gflop_per_s": peak,
        "rows": rows,
    }
    write_result(args.output, result)
    return result


if __name__ == "__main__":
    main()
