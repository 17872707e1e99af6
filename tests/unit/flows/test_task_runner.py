"""The station's Dask task runner ships the same run context as prefect-dask's, settings serialised once."""

from prefect.context import SettingsContext, serialize_context
from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

from flows.cluster import make_task_runner
from flows.task_runner import StationTaskRunner


def test_settings_are_serialised_once_per_settings_and_shipped_unchanged(monkeypatch):
    runner = make_task_runner("tcp://127.0.0.1:1")  # never started: only the context it ships is looked at
    assert isinstance(runner, StationTaskRunner)
    calls = []
    real = SettingsContext.serialize

    def counted(self, include_secrets=True):
        calls.append(type(self).__name__)
        return real(self, include_secrets=include_secrets)

    monkeypatch.setattr(SettingsContext, "serialize", counted)
    with temporary_settings({PREFECT_LOGGING_LEVEL: "WARNING"}):
        shipped = []
        for _ in range(3):
            with runner._settings_context():
                shipped.append(serialize_context()["settings_context"])
        assert calls == ["SettingsContext"]  # once for three tasks, by the real serialiser
        expected = real(SettingsContext.get())
        assert all(s == expected for s in shipped) and expected["settings"]["logging"]["level"] == "WARNING"
        with temporary_settings({PREFECT_LOGGING_LEVEL: "ERROR"}):  # other settings: serialised again
            with runner._settings_context():
                assert serialize_context()["settings_context"]["settings"]["logging"]["level"] == "ERROR"
        assert len(calls) == 2
    # a subflow's copy of the runner is the station's runner too
    assert isinstance(runner.duplicate(), StationTaskRunner)
