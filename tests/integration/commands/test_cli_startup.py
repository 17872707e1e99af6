"""``gsp --help`` and ``gsp inspect`` start fast: they import none of torch, Prefect, Dask or CompressAI (each
command's handler imports what it needs when it runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO

GOLDEN = REPO / "tests" / "golden" / "golden.gsp"
HEAVY = ("torch", "prefect", "dask", "distributed", "compressai")

#: Runs ``gsp ARGS`` in a fresh interpreter, then reports which heavy packages it imported.
PROBE = """
import sys
from gsp.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
print("IMPORTED " + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
""".format(heavy=HEAVY)


def _imported(*args: str) -> tuple[int, list[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("IMPORTED")]
    assert line, proc.stderr[-2000:]
    return proc.returncode, [m for m in line[-1].split(" ", 1)[1].split(",") if m], proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["process", "--help"], ["evaluate", "--help"],
                                  ["train-enhancer", "--help"]])
def test_help_imports_no_heavy_package(args):
    code, heavy, out = _imported(*args)
    assert code == 0 and "usage: gsp" in out
    assert heavy == [], f"gsp {' '.join(args)} imported {heavy}"


def test_inspect_imports_no_heavy_package():
    code, heavy, out = _imported("inspect", str(GOLDEN))
    assert code == 0 and "pass golden" in out
    assert heavy == [], f"gsp inspect imported {heavy}"
