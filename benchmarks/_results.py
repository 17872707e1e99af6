"""Shared by the benchmark scripts: where results go and the machine facts recorded with each."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What a number was measured on (the scripts run side by side on one machine; compare within a file)."""
    return {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_result(path: str | Path, result: dict) -> Path:
    """Write ``result`` plus :func:`machine` as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
