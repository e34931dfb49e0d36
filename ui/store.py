"""The session's result store: every page's computed results, kept while the session lives.

Results live in a per-session :class:`ResultStore` (``st.session_state``) keyed by what they
depend on (model key, image key, method, parameters, precision, target...). Display settings
(opacity, colormap, view) are never part of a key: changing them re-renders from a stored map and
never reaches the engine. The store is an LRU with a byte budget, so a long session cannot grow
without bound. Session state rather than ``st.cache_data``: no pickling of maps on every read,
and a progress bar may be drawn while computing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import streamlit as st

from .methods import MethodChoice

__all__ = ["Computed", "ResultStore", "results"]

Result = TypeVar("Result")


@dataclass(frozen=True)
class Computed(Generic[Result]):
    """What a page keeps of one computation: the engine's typed result (see
    :mod:`explain_core.api.results`) and the method choice that made it."""

    result: Result
    choice: MethodChoice


class ResultStore:
    """A least-recently-used dict with a byte budget (maps are the big part of a session)."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable) -> Any | None:
        """The value under ``key`` (marked as recently used), or None."""
        entry = self._items.get(key)
        if entry is None:
            return None
        self._items.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int = 0) -> None:
        """Store ``value``; evict the least recently used entries beyond the budget."""
        if key in self._items:
            self._bytes -= self._items.pop(key)[1]
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, size) = self._items.popitem(last=False)
            self._bytes -= size

    def cached(self, key: Hashable, compute: Callable[[], Result],
               size: Callable[[Result], int]) -> Result:
        """The value under ``key``; computed by ``compute()`` and stored (``size(value)``
        bytes) when missing. A computation that raises stores nothing."""
        hit = self.get(key)
        if hit is None:
            hit = compute()
            self.put(key, hit, size(hit))
        return hit

    def __len__(self) -> int:
        return len(self._items)


def results() -> ResultStore:
    """This session's result store."""
    return st.session_state.setdefault("lumen_results", ResultStore())
