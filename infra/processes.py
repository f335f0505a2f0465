"""Detached service processes: record them, check them, and stop them later from another command.

A process is recorded by pid and start time (``/proc/PID/stat``, clock ticks since boot): pids are
reused, and the start time tells the process we started from a newer one that got its pid. Stopping
signals the process's own group and every descendant found before the first signal, because some
children leave the group (Prefect starts each flow run in a session of its own, a flow run's local
Ray has its own daemons). Zombies count as stopped. Without ``/proc`` (not Linux) only the group is
signalled and the start time is not checked.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRecord:
    """A process the stack started: ``name`` (the component), ``pid`` and its start time (0: unknown)."""

    name: str
    pid: int
    started: int = 0


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from field 3 (the state) on, or None when there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # field 2, the command, is in parentheses and may hold spaces


# Indices into _stat's list (field number - 3).
_STATE, _PPID, _PGRP, _START = 0, 1, 2, 19


def start_time(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[_START]) if fields else 0


def record(name: str, pid: int) -> ProcessRecord:
    return ProcessRecord(name, pid, start_time(pid))


def is_running(pid: int, started: int = 0) -> bool:
    """True while ``pid`` runs (not a zombie) and, when ``started`` is given, is still the same process."""
    if not PROC.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _stat(pid)
    if fields is None or fields[_STATE] in ("Z", "X"):
        return False
    return not started or int(fields[_START]) == started


def _all_processes() -> dict[int, list[str]]:
    found = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[_STATE] not in ("Z", "X"):
                found[int(entry.name)] = fields
    return found


def family(pid: int) -> dict[int, int]:
    """The live members of ``pid``'s process tree and of its process group: {pid: start time}."""
    processes = _all_processes()
    children: dict[int, list[int]] = defaultdict(list)
    for child, fields in processes.items():
        children[int(fields[_PPID])].append(child)
    members = {p for p, fields in processes.items() if int(fields[_PGRP]) == pid}
    pending = [pid, *members]
    while pending:
        parent = pending.pop()
        if parent in processes:
            members.add(parent)
        pending += [child for child in children[parent] if child not in members]
    return {p: int(processes[p][_START]) for p in members}


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is our own child (a start and stop in one process)."""
    with suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal_all(group: int, members: Iterable[int], signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)
    for member in members:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(member, signum)


def stop(process: ProcessRecord, grace_s: float = 20.0) -> bool:
    """SIGTERM the process, its group and its descendants; SIGKILL what is left after ``grace_s``.

    Returns True when something of it was running. Does nothing to a pid now held by another process.
    """
    if not is_running(process.pid, process.started):
        _reap(process.pid)
        return False
    members = family(process.pid) if PROC.is_dir() else {process.pid: process.started}

    def left() -> list[int]:
        for pid in members:
            _reap(pid)
        return [pid for pid, started in members.items() if is_running(pid, started)]

    _signal_all(process.pid, members, signal.SIGTERM)
    if not wait_for(lambda: not left(), grace_s):
        _signal_all(process.pid, left(), signal.SIGKILL)
        wait_for(lambda: not left(), 10.0)
    return True


def wait_for(condition: Callable[[], bool], timeout: float, poll_s: float = 0.2) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file ("" when it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
