"""What every training run of the project shares, codec and enhancer alike.

* :class:`RunDir` - the run directory: ``last.pt`` written atomically with a format tag and the run's options,
  read back (through :mod:`groundstation.checkpoints`) only if the tag is this trainer's and the options that
  define the run are unchanged (a resume may change only the step count, checkpoint interval, threads and
  device), ``config.json`` beside it;
* :class:`LossLog` - ``loss.csv``, one row per step, truncated on resume to the checkpoint's step (a crash may
  have logged steps past it), and its curve ``loss.png``;
* :func:`groundstation.codec.torch_threads` - the run's torch threads, restored afterwards.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Iterable

from groundstation.checkpoints import read_checkpoint
from groundstation.errors import CheckpointError, ConfigError
from groundstation.fileio import save_torch_atomic, write_json_atomic
from groundstation.plots import plot_loss_curve

__all__ = ["CHECKPOINT_NAME", "LossLog", "RESUMABLE", "RunDir"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
#: Options a resumed run may change; every other option must be what the run started with.
RESUMABLE = frozenset({"steps", "checkpoint_every", "threads", "device", "out", "data", "pairs"})


def _flat(d: dict, resumable: Iterable[str]) -> dict:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in resumable:
            continue
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


class RunDir:
    """A training run's directory: its checkpoint (format-tagged, options recorded) and ``config.json``."""

    def __init__(self, out: str | Path, format_tag: str, options: dict, *, resumable: Iterable[str] = RESUMABLE):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.format_tag = format_tag
        self.options = json.loads(json.dumps(options, default=str))
        self.resumable = frozenset(resumable)

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def load(self, *, defaults: dict | None = None, legacy_ok: bool = False) -> dict | None:
        """The checkpoint's state to resume from, or None when the run is new.

        Refused (with what to do): another trainer's file, a torn file, a run started with other options.
        ``defaults`` fill options older runs did not record; ``legacy_ok`` accepts a checkpoint written before
        format tags (its options cannot be compared: a warning says so).
        """
        if not self.checkpoint.exists():
            return None
        try:
            state, _ = read_checkpoint(self.checkpoint)
        except CheckpointError as exc:  # a torn or foreign file: the operator decides
            raise CheckpointError(f"{exc}; move it away to start afresh") from exc
        if not isinstance(state, dict) or "state_dict" not in state:
            raise CheckpointError(f"{self.checkpoint}: not a training checkpoint of gsp ({self.format_tag})")
        tag = state.get("format")
        if tag is None and legacy_ok:
            log.warning("%s has no format tag (written before tags existed): resuming without checking that "
                        "its options are these", self.checkpoint)
            return state
        if tag != self.format_tag:
            raise CheckpointError(f"{self.checkpoint}: a {tag or 'untagged'} checkpoint, not {self.format_tag}; "
                                  "train into another -o")
        before = {**(defaults or {}), **json.loads(state.get("config") or "{}")}
        a, b = _flat(before, self.resumable), _flat(self.options, self.resumable)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:5])
            raise ConfigError(f"{self.out} was started with other options ({shown}); resume with the same "
                              f"options (see {self.out / 'config.json'}) or train into a new -o")
        return state

    def save(self, state: dict) -> None:
        """Write ``last.pt`` atomically, tagged with the format and the run's options."""
        save_torch_atomic({**state, "format": self.format_tag, "config": json.dumps(self.options)},
                          self.checkpoint)

    def write_config(self, meta: dict) -> None:
        write_json_atomic(self.out / "config.json", meta)


class LossLog:
    """``loss.csv`` with a fixed header; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: str | Path, columns: list[str], step: int = 0):
        self.path = Path(path)
        self.columns = list(columns)
        rows: list[list[str]] = []
        if step > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.reader(f)
                if next(reader, None) == self.columns:
                    rows = [r for r in reader if r and int(float(r[0])) <= step]
        self._file = open(self.path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.columns)
        self._writer.writerows(rows)

    def write(self, row: list) -> None:
        self._writer.writerow(row)

    def flush(self) -> None:
        self._file.flush()

    def plot(self, png: str | Path, title: str = "") -> None:
        self.flush()
        plot_loss_curve(self.path, png, title=title)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "LossLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
