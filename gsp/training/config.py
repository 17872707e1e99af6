"""Training options that the command line shows as defaults (light: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CodecTrainConfig"]


@dataclass
class CodecTrainConfig:
    data: list[str]
    out: str
    N: int = 96
    M: int = 192
    lmbda: float = 0.0032
    steps: int = 4000
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-4
    lr_drop_at: int = 3200  # lr /= 10 from this step on
    aux_lr: float = 1e-3
    clip: float = 1.0
    checkpoint_every: int = 250
    seed: int = 0
    threads: int | None = None
    groups: list[int] = field(default_factory=list)
    init_from: str | None = None  # a training checkpoint (last.pt) whose weights start a new run (not resumed)

    def arch(self):
        from groundstation.codec import CodecArch

        return CodecArch(self.N, self.M, tuple(self.groups)) if self.groups else CodecArch.default_groups(self.N, self.M)
