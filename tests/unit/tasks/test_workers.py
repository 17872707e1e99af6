"""The worker-side set-up every cluster gets (tasks.workers): a worker that lost its scheduler says so in one line."""

from __future__ import annotations

import logging

from tasks.workers import quiet_lost_scheduler


def test_a_lost_scheduler_is_one_line_without_a_traceback(caplog):
    """distributed logs each failed heartbeat with the connection's traceback (seen on a station's console when
    gsp serve stops while a worker is between heartbeats); once the filter is installed it is one line."""
    quiet_lost_scheduler()
    quiet_lost_scheduler()  # idempotent: one filter
    log = logging.getLogger("distributed.worker")
    assert sum(type(f).__name__ == "_LostScheduler" for f in log.filters) == 1
    with caplog.at_level(logging.ERROR, logger="distributed.worker"):
        try:
            raise ConnectionError("Stream is closed")
        except ConnectionError:
            log.exception("Failed to communicate with scheduler during heartbeat.")
        try:
            raise ValueError("other")
        except ValueError:
            log.exception("Compute Failed")
    heartbeat, other = caplog.records
    assert heartbeat.exc_info is None and "the scheduler is gone: ConnectionError" in heartbeat.getMessage()
    assert "Traceback" not in caplog.text.split("Compute Failed")[0]
    assert other.exc_info is not None  # anything else keeps its traceback
