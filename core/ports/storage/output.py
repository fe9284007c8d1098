"""A running task's streamed output: chunks numbered from 0, stored and counted on the task in
one atomic write (so the limits and the numbering hold when a backend's requests race)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from core.domain.models import OutputChunk, Task

__all__ = ["OutputStore"]


class OutputStore(ABC):
    @abstractmethod
    def append_output(self, task: Task, chunk: OutputChunk, size: int) -> Task:
        """Store `chunk` (its index is `task.output_chunks`) and count it on the task
        (`output_chunks` + 1, `output_bytes` + `size`) in one atomic write, if the task is
        still PROCESSING on `task.server_id` with `task.attempts` and `task.output_chunks`.
        Returns the task as written; StaleWriteError(current) otherwise (nothing stored)."""

    @abstractmethod
    def task_output(self, task_id: str, *, after: int = -1, limit: int = 100) -> list[OutputChunk]:
        """The task's chunks with an index above `after`, in index order, at most `limit`.
        They go with their task: dropped when it is (or, at the latest, at their own expiry)."""
