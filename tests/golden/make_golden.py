"""Regenerate the golden pass: a tiny generated scene encoded with the registry's default codec.

    .venv/bin/python tests/golden/make_golden.py

Run it only when the committed codec changes on purpose: the point of the golden files is that a library
upgrade or another machine that decodes them differently fails CI (tests/test_golden.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from synth import write_scene  # noqa: E402

from groundstation.decode import decode_pass  # noqa: E402
from groundstation.encode import encode_scene  # noqa: E402
from groundstation.product import open_product  # noqa: E402

PASS = HERE / "golden.gsp"
EXPECTED = HERE / "expected.json"


def digest_product(path: Path) -> dict:
    ds = open_product(path)
    return {"decoded_sha256": hashlib.sha256(ds.decoded.values.tobytes()).hexdigest(),
            "valid_sha256": hashlib.sha256(ds.valid.values.tobytes()).hexdigest(),
            "shape": list(ds.decoded.shape)}


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = write_scene(tmp / "golden.tif", 150, 200, crs="EPSG:32631", nodata_box=(0, 20, 0, 30), nodata=0, seed=7)
        PASS.unlink(missing_ok=True)
        res = encode_scene(scene, PASS, tile_size=128, pass_id="golden", acquired="2026-01-01T00:00:00+00:00")
        summary = decode_pass(PASS, tmp / "golden.zarr")
        assert not summary.lost
        expected = {"codec": res.header.codec.name, "codec_sha256": res.header.codec.sha256,
                    "tiles": res.tiles, "bytes": res.bytes, **digest_product(tmp / "golden.zarr")}
    EXPECTED.write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
