"""The capable servers of one capability requirement, indexed so that a dispatch decision costs
about the same with 1,000 servers as with 10.

A `CapableGroup` holds the online servers that have every capability in its requirement, in id
order (the order `balancer.candidates` gives), and keeps, as slots are taken and freed:

- which of them have a free slot, in a Fenwick tree over their positions: the number of
  candidates and the k-th candidate in id order are O(log n) (round-robin, random, p2c);
- a heap per ordering key (least-connections, response-time) holding the candidates'
  current keys; entries made stale by a later change are dropped when they reach the top.

Pure data structures, no I/O: `core.services.fleet.FleetView` builds a group on first use after each
refresh and feeds it every slot change it makes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

from core.domain.models import Server

HeapKey = Callable[[Server], tuple[Any, ...]]


def has_free_slot(server: Server) -> bool:
    return server.active_tasks < server.max_concurrent


class Fenwick:
    """Prefix sums of 0/1 flags with point updates and k-th-one search, all O(log n)."""

    def __init__(self, flags: Sequence[int]) -> None:
        size = len(flags)
        tree = [0, *flags]
        for i in range(1, size + 1):  # linear-time build
            parent = i + (i & -i)
            if parent <= size:
                tree[parent] += tree[i]
        self._tree = tree
        self._top = 1 << size.bit_length() if size else 0
        self.total = sum(flags)

    def add(self, index: int, delta: int) -> None:
        self.total += delta
        i, tree = index + 1, self._tree
        while i < len(tree):
            tree[i] += delta
            i += i & -i

    def kth(self, k: int) -> int:
        """The position of the k-th (0-based) flag that is 1; requires 0 <= k < total."""
        position, step, tree = 0, self._top, self._tree
        while step:
            nxt = position + step
            if nxt < len(tree) and tree[nxt] <= k:
                position = nxt
                k -= tree[nxt]
            step >>= 1
        return position


class CapableGroup:
    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers = sorted(servers, key=lambda s: s.id)
        self.position = {s.id: i for i, s in enumerate(self.servers)}
        self._free = Fenwick([1 if has_free_slot(s) else 0 for s in self.servers])
        self._heaps: dict[HeapKey, list[tuple[tuple[Any, ...], int]]] = {}
        self.plan: Any = None  # weighted round-robin's cycle, built by the balancer on first use

    @property
    def candidate_count(self) -> int:
        return self._free.total

    def candidate(self, k: int) -> Server:
        """The k-th (0-based) server with a free slot, in id order."""
        return self.servers[self._free.kth(k)]

    def update(self, server: Server) -> None:
        """`server` changed (a slot taken or freed, a new latency)."""
        i = self.position[server.id]
        was, now = has_free_slot(self.servers[i]), has_free_slot(server)
        self.servers[i] = server
        if was != now:
            self._free.add(i, 1 if now else -1)
        if now:
            for key, heap in self._heaps.items():
                heapq.heappush(heap, (key(server), i))
                if len(heap) > 4 * len(self.servers) + 64:  # mostly stale entries: start afresh
                    self._heaps[key] = self._fresh_heap(key)

    def least(self, key: HeapKey) -> Server | None:
        """The server with a free slot whose `key` is smallest."""
        heap = self._heaps.get(key)
        if heap is None:
            heap = self._heaps[key] = self._fresh_heap(key)
        while heap:
            entry, i = heap[0]
            server = self.servers[i]
            if has_free_slot(server) and key(server) == entry:
                return server
            heapq.heappop(heap)  # stale: the server changed or filled up since
        return None

    def _fresh_heap(self, key: HeapKey) -> list[tuple[tuple[Any, ...], int]]:
        heap = [(key(s), i) for i, s in enumerate(self.servers) if has_free_slot(s)]
        heapq.heapify(heap)
        return heap
