"""Where a tile's decode time goes, and what batching the synthesis over tiles would buy.

Per 256 px tile of a real pass (a 1536x1536 crop of a drone frame, the registry's default codec, the default
entropy mode for new passes), interleaved tile by tile in one process on ``--threads`` threads:

* the entropy path (hyper-synthesis, contexts, parameters, range decoding: what decides the symbols),
* the synthesis transform g_s (float32) on the CPU, one tile at a time and as batches of ``--batch`` tiles,
* with ``--device cuda``: g_s on the GPU (the entropy path stays on the CPU).

    .venv/bin/python benchmarks/decode_throughput.py --tiles 24
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS, write_result  # noqa: E402
from pipeline_throughput import make_pass  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", type=int, default=24, help="tiles timed (of the 36-tile pass)")
    ap.add_argument("--batch", type=int, default=8, help="tiles per batched g_s call")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to also time g_s on the GPU")
    ap.add_argument("--work", default="/tmp/gsp-pipeline-bench")
    ap.add_argument("--out", default=str(RESULTS / "decode_throughput.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from groundstation.codec import TileCodec, _default_dtype, load_codec
    from groundstation.container import PassReader
    from groundstation.registry import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    reader = PassReader(make_pass(36, work))
    header = reader.header
    _, path, _, _ = resolve_model(header.codec.name, "codec")
    lc = load_codec(path, header.codec.sha256)
    tc = TileCodec(lc, threads=args.threads, entropy=header.codec.entropy)
    model = tc._model()
    latent, _ = tc._entropy_path(model)
    ctx = (lambda: _default_dtype(torch.float64)) if header.codec.entropy == "float64" else contextlib.nullcontext

    def entropy_decode(rec) -> torch.Tensor:
        if header.codec.entropy == "int":  # the integer prior networks (no witness: as the float paths here)
            return tc._int_coder().decompress(rec.strings, rec.z_hw, torch.device("cpu"), lambda _s: None)
        with ctx():
            return latent.decompress([[s] for s in rec.strings], shape)["y_hat"]
    records = [reader.read(t) for t in sorted(reader.scan().records)]
    shape0 = (records[0].z_hw, records[0].y_hw)
    records = [r for r in records if (r.z_hw, r.y_hw) == shape0][: args.tiles + 2]
    groups = lc.arch.groups
    shape = {"y": [torch.Size([g, *shape0[1]]) for g in groups], "hyper": torch.Size(shape0[0])}
    g_s_gpu = None
    if args.device.startswith("cuda"):
        import copy

        g_s_gpu = copy.deepcopy(model.g_s).to(args.device).eval()

    times: dict[str, list[float]] = {"entropy": [], "g_s": [], "g_s_batched": [], "g_s_cuda": []}
    y_hats = []
    with torch.inference_mode():
        for i, rec in enumerate(records):
            t0 = time.perf_counter()
            y = entropy_decode(rec)
            t1 = time.perf_counter()
            model.g_s(y.float())
            t2 = time.perf_counter()
            if i >= 2:  # the first tiles warm the kernels up
                times["entropy"].append(t1 - t0)
                times["g_s"].append(t2 - t1)
                y_hats.append(y.float())
            if g_s_gpu is not None:
                t3 = time.perf_counter()
                g_s_gpu(y.float().to(args.device)).cpu()
                if i >= 2:
                    times["g_s_cuda"].append(time.perf_counter() - t3)
        for k in range(0, len(y_hats) - args.batch + 1, args.batch):
            batch = torch.cat(y_hats[k: k + args.batch])
            t0 = time.perf_counter()
            model.g_s(batch)
            times["g_s_batched"].append((time.perf_counter() - t0) / args.batch)
    ms = {k: round(1e3 * statistics.median(v), 1) for k, v in times.items() if v}
    print(f"{len(y_hats)} tiles, entropy mode {header.codec.entropy}, {args.threads} thread(s): ms per tile (median)")
    for k, v in ms.items():
        print(f"  {k:12s} {v:8.1f}")
    write_result(args.out, {"command": "benchmarks/decode_throughput.py " + " ".join(argv or sys.argv[1:]),
                            "tiles": len(y_hats), "entropy_mode": header.codec.entropy, "threads": args.threads,
                            "batch": args.batch, "ms_per_tile": ms})
    return 0


if __name__ == "__main__":
    sys.exit(main())
