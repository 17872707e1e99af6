"""The batch scheduler of a run: submits batches as their dependencies resolve, keeps a bounded number in
flight, and turns a failed batch (an exception, or a worker that died) into a recorded failure instead of a
failed flow. Also the test hooks a run reads (environment variables of the flow process).
"""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass, field
from typing import Any, Callable

from tasks.plan import STAGES, Batch

__all__ = ["BatchScheduler", "RunInterrupted", "STOP_AFTER_ENV", "hook_value", "stage_priority"]

#: Test hook (environment of the flow process): stop after N batches, as a run killed half way would.
STOP_AFTER_ENV = "GSP_TEST_STOP_AFTER_BATCHES"


class RunInterrupted(RuntimeError):
    """The run was stopped on purpose before finishing (test hook); the next run resumes it."""


@dataclass
class BatchScheduler:
    """Run batches in dependency order with at most ``max_in_flight`` submitted at a time (decode batches: as many again).

    ``submit(batch)`` returns a Prefect future; it is called only when every batch in ``batch.deps`` has
    finished (done or failed), so it can use upstream results. A batch that depends on a failed synthesis,
    enhance or evaluate batch is not run (failed: "not run: ... failed"), since its input was not made; a failed
    decode batch only costs its tiles (masked as lost), so what depends on it runs. Ready batches of earlier
    stages go first (decode, synthesize, enhance, evaluate; in each stage the lower index), and
    :func:`stage_priority` gives Dask the same order among the tasks waiting for a worker: the critical path
    first. While a pass arrives this keeps decoding and synthesis at the downlink's heels, so the windows over
    its last rows are ready as soon as its last records are in, instead of the last decode batch waiting behind
    enhancement windows that were ready earlier (``benchmarks/pass_latency.py --trace``). For the same reason
    decode batches have a cap of their own (``max_in_flight`` decode batches, whatever else is in flight): a batch
    held back behind other stages waits until a task finishes and then behind whatever Dask had already queued on
    that worker (the pass's last records waited 1.5 s so), while one submitted at once is the next task its
    worker starts.
    ``on_progress(done, total)`` is called after each batch, ``on_failure(batch, why)`` after a batch failed and
    before anything that depends on it is submitted. ``stop_after`` (test hook) stops submitting after
    that many batches have finished in this run, waits for those in flight and raises RunInterrupted.
    """

    submit: Callable[[Batch], Any]
    max_in_flight: int = 4
    on_progress: Callable[[int, int], None] | None = None
    on_failure: Callable[[Batch, str], None] | None = None
    stop_after: int | None = None
    results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def run(self, batches: list[Batch], already: dict[str, Any],
            on_progress: Callable[[int, int], None] | None = None,
            more: Callable[[], list[Batch] | None] | None = None, poll_s: float = 0.25) -> None:
        """``already``: results of batches done by an earlier run (their markers); those are not resubmitted.
        ``on_progress``: replaces the scheduler's own for this call. ``more``: where batches come from while
        the run goes on (a pass still arriving): called after every finished batch and every ``poll_s`` seconds
        while waiting, it returns batches to add (their dependencies are batches already added), or None once
        no more will come; the run ends when that source is done and nothing is left."""
        if on_progress is not None:
            self.on_progress = on_progress
        self.results.update(already)
        total = len(batches)
        pending = [b for b in batches if b.key not in already]
        rank = {stage: i for i, stage in enumerate(STAGES)}
        pending.sort(key=lambda b: (rank[b.stage], b.index))
        in_flight: dict[Any, Batch] = {}
        done_q: queue.Queue = queue.Queue()
        finished_here = 0
        stopping = False
        source_done = more is None
        cut_short = False  # stopped while more batches were still to come

        def add(new: list[Batch] | None) -> bool:
            nonlocal total
            if new is None:
                return True
            pending.extend(b for b in new if b.key not in self.results)
            total += len(new)
            pending.sort(key=lambda b: (rank[b.stage], b.index))
            return False

        if not source_done:
            source_done = add(more())
        self._progress(total)
        while pending or in_flight or not source_done:
            if not stopping:
                decoding = sum(b.stage == STAGES[0] for b in in_flight.values())
                for b in list(pending):
                    if b.stage == STAGES[0]:  # (first in ``pending``) a cap of their own, see above
                        if decoding >= self.max_in_flight:
                            continue
                        decoding += 1
                    elif len(in_flight) >= self.max_in_flight:
                        break
                    broken = sorted(d for d in b.deps if d in self.failures and not d.startswith("decode"))
                    if broken and all(d in self.results or d in self.failures for d in b.deps):
                        # its input pixels were not made: running it would keep wrong work under a done marker
                        pending.remove(b)
                        self.failures[b.key] = f"not run: {', '.join(broken)} failed"
                        if self.on_failure is not None:
                            self.on_failure(b, self.failures[b.key])
                        self._progress(total)
                        continue
                    if all(d in self.results or d in self.failures for d in b.deps):
                        fut = self.submit(b)
                        fut.add_done_callback(done_q.put)
                        in_flight[fut] = b
                        pending.remove(b)
            if not in_flight and source_done:
                if stopping or not pending:
                    break
                raise RuntimeError(f"batches {[b.key for b in pending]} wait for batches that are not planned")
            try:
                fut = done_q.get(timeout=None if source_done else poll_s)
            except queue.Empty:
                fut = None
            if fut is not None:
                b = in_flight.pop(fut)
                try:
                    self.results[b.key] = fut.result()
                except Exception as exc:  # noqa: BLE001 - the task's error, or a worker that died (KilledWorker)
                    self.failures[b.key] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    if self.on_failure is not None:  # before any dependent batch is submitted
                        self.on_failure(b, self.failures[b.key])
                self.ran.append(b.key)
                finished_here += 1
                if self.stop_after is not None and finished_here >= self.stop_after:
                    stopping = True
            if not source_done and not stopping:
                source_done = add(more())
            elif stopping and not source_done:
                source_done = cut_short = True
            if fut is not None or more is not None:
                self._progress(total)
        if stopping and (cut_short or pending or len(self.results) + len(self.failures) < total):
            raise RunInterrupted(f"stopped after {finished_here} batches on request ({STOP_AFTER_ENV}); "
                                 "run again to finish")

    def _progress(self, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(len(self.results) + len(self.failures), total)


def stage_priority(stage: str) -> int:
    """Dask priority of a stage's tasks (higher runs first): decode > synthesize > enhance > evaluate."""
    return len(STAGES) - STAGES.index(stage)


def hook_value(name: str) -> str | None:
    """Test hooks are environment variables read by the flow process (never by workers)."""
    return os.environ.get(name) or None
