"""A task's streamed output in memory: the chunk and its count on the task in one step."""

from __future__ import annotations

import msgspec

from core.domain.models import OutputChunk, Task, TaskStatus
from core.errors import StaleWriteError
from core.local.memory._data import MemoryBase, changed, copy
from core.ports.storage import OutputStore


class MemoryOutputStore(MemoryBase, OutputStore):
    def append_output(self, task: Task, chunk: OutputChunk, size: int) -> Task:
        with self._lock:
            current = self.data.tasks.get(task.id)
            if (
                current is None
                or current.status is not TaskStatus.PROCESSING
                or (current.attempts, current.server_id, current.output_chunks)
                != (task.attempts, task.server_id, task.output_chunks)
            ):
                raise StaleWriteError(None if current is None else copy(current))
            counts = {"output_chunks": current.output_chunks + 1, "output_bytes": current.output_bytes + size}
            written = self.data.tasks[task.id] = changed(Task, current, counts)
            stored = msgspec.structs.replace(chunk, index=task.output_chunks)
            self.data.output.setdefault(task.id, []).append(_copy_chunk(stored))
            return copy(written)

    def task_output(self, task_id: str, *, after: int = -1, limit: int = 100) -> list[OutputChunk]:
        with self._lock:
            chunks = self.data.output.get(task_id, [])
            return [_copy_chunk(c) for c in chunks if c.index > after][:limit]


def _copy_chunk(chunk: OutputChunk) -> OutputChunk:
    return msgspec.json.decode(msgspec.json.encode(chunk), type=OutputChunk)
