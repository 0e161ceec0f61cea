"""The dependency graph of compiled steps: unknown ids, cycles, topological order.

``requires`` defaults to the previous step, so a runbook reads top to bottom. A
requirement on a fanned-out step means every one of its instances. The order is
topological with the runbook's own order as the tie-break, so it is deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence


class CycleError(Exception):
    """Raised by :func:`topological_order` with the ids on one cycle, in order."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(" → ".join(cycle))
        self.cycle = cycle


def topological_order(nodes: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """``nodes`` ordered so each comes after its ``deps``; ties keep ``nodes`` order."""
    nodes = list(dict.fromkeys(nodes))  # a duplicate id (reported elsewhere) is one node
    rank = {n: i for i, n in enumerate(nodes)}
    indegree = dict.fromkeys(nodes, 0)
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for n in nodes:
        for d in deps.get(n, ()):
            indegree[n] += 1
            children[d].append(n)
    ready = [rank[n] for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        n = nodes[heapq.heappop(ready)]
        out.append(n)
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(ready, rank[c])
    if len(out) != len(nodes):
        raise CycleError(_find_cycle([n for n in nodes if indegree[n] > 0], deps))
    return out


def _find_cycle(remaining: list[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    left = set(remaining)
    start = remaining[0]
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps.get(node, ()) if d in left)
    cycle = path[seen[node] :]
    cycle.reverse()  # so it reads in execution order: a → b means b requires a
    return [*cycle, cycle[0]]


def ancestor_bits(order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """For each node, a bitset (by position in ``order``) of every transitive dependency.

    Test a position with :func:`has`. Each dependency's bit is made where it is used
    rather than kept for every node: a table of ``1 << i`` for 10,000 nodes alone is
    6 MB and grows with the square of the count.
    """
    pos = {n: i for i, n in enumerate(order)}
    anc: dict[str, int] = {}
    for n in order:
        acc = 0
        for d in deps.get(n, ()):
            acc |= anc[d] | (1 << pos[d])
        anc[n] = acc
    return anc


def bitset(positions: Iterable[int]) -> int:
    """The bitset of ``positions``, built in one pass (not one growing ``|=`` per bit)."""
    buf = bytearray()
    for i in positions:
        byte = i >> 3
        if byte >= len(buf):
            buf.extend(bytes(byte + 1 - len(buf)))
        buf[byte] |= 1 << (i & 7)
    return int.from_bytes(buf, "little")


def has(bits: int, position: int) -> bool:
    """Whether ``position`` is in the bitset ``bits``."""
    return bits >> position & 1 == 1
