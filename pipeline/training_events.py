"""The progress events of a Ray Train run: rank 0 sends them through a Ray queue, the driver drains them.

Rank 0 puts ``start``, ``progress`` (loss, lr, samples/s, ETA, an optional sample grid, its CPU
seconds) and ``checkpoint`` events on the queue without ever blocking training; the driver hands
each one to a handler (the progress line for the flow's log, MLflow logging) from a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ssh_model.train import step_line

logger = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 10_000


class RankZeroEvents:
    """Rank 0's side of the event queue (the other ranks send nothing); never blocks training."""

    def __init__(self, queue: Any, rank: int) -> None:
        self.queue = queue if rank == 0 else None

    def send(self, kind: str, **values: Any) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put({"kind": kind, "time": time.time(), **values}, block=False)
        except Exception as err:  # a full or lost queue must not stop training
            logger.warning("progress event %s dropped: %s", kind, err)


def drain_events(events: Any, handle: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
    """Hand every queued event to ``handle`` until ``stop`` is set and the queue is empty.

    Waits inside the queue actor (a blocking get with a timeout) instead of polling it: on a 2-core
    machine a 5 Hz poll of an actor costs the training workers a few percent of a core.
    """
    from ray.util.queue import Empty  # deferred: rank 0's events module is imported by the driver before Ray starts

    while True:
        try:
            items = [events.get(block=True, timeout=1.0)]
            waiting = min(100, events.qsize())
            if waiting:
                items += events.get_nowait_batch(waiting)
        except Empty:
            items = []
        except Exception:  # the queue actor is gone: nothing more will arrive
            return
        for item in items:
            try:
                handle(item)
            except Exception:
                logger.exception("progress event handler failed on %s", item.get("kind"))
        if not items and stop.is_set():
            return


def event_line(event: dict[str, Any]) -> str:
    """One human line for a worker event."""
    if event["kind"] == "progress":
        return step_line(event["step"], event["steps"], event["losses"], event["lr"], event["samples_per_s"], event["eta_s"])
    if event["kind"] == "start":
        verb = "resuming from step" if event["step"] else "starting at step"
        return (
            f"{event['world_size']} worker(s) on {event['device']}: {verb} {event['step']} of "
            f"{event['steps']}; {event['triplets']} triplets, "
            f"{event['batches_per_epoch']} batches/epoch/worker"
        )
    if event["kind"] == "checkpoint":
        return f"checkpoint at step {event['step']}"
    if event["kind"] == "select":
        best = f" (best: step {event['best_step']})" if "best_step" in event else ""
        return f"selection composites at step {event['step']}: {event['select_psnr']:.2f} dB{best}"
    return f"{event['kind']}: {event}"


__all__ = ["EVENT_QUEUE_SIZE", "RankZeroEvents", "drain_events", "event_line"]
