"""The flows' Dask task runner: prefect-dask's, less a per-task cost that grows with the run's length.

For every task it submits, Prefect serialises the whole run context, settings included, to ship it to the
worker; the settings part (several hundred fields walked by pydantic) is the same for every task of a run, and
on this project's 2-core machines it was most of the flow process's CPU per task: 104 ms with prefect-dask's
runner, 37 ms with this one (``benchmarks/task_overhead.py``; CPU the workers then lack). Here it is
serialised once per settings object and reused: the workers receive the same dictionary as before.
"""

from __future__ import annotations

from typing import Any

from prefect.context import SettingsContext
from prefect_dask import DaskTaskRunner
from pydantic import PrivateAttr

__all__ = ["StationTaskRunner"]


class _SerialisedSettings(SettingsContext):
    """The current settings context with its serialised form computed beforehand (for :func:`serialize_context`,
    which prefect-dask calls once per submitted task)."""

    _serialised: dict[str, Any] = PrivateAttr(default_factory=dict)

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        return self._serialised if include_secrets else super().serialize(include_secrets=False)


class StationTaskRunner(DaskTaskRunner):
    """A :class:`DaskTaskRunner` that serialises Prefect's settings once, not once per task."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._settings: tuple[SettingsContext, dict[str, Any]] | None = None

    def _settings_context(self) -> SettingsContext:
        current = SettingsContext.get()
        if self._settings is None or self._settings[0] is not current:
            self._settings = (current, current.serialize())
        ctx = _SerialisedSettings(profile=current.profile, settings=current.settings)
        ctx._serialised = self._settings[1]
        return ctx

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        with self._settings_context():
            return super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)
