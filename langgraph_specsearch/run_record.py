"""The options a checkpointed search ran with, kept next to its checkpoint.

A resumed search must run the same graph with the same settings, or the checkpoint no longer
fits it (a `KeyError` deep in LangGraph, or a run that "finishes" with an empty path). The
first run of a thread records its `SearchConfig` in a small table of the checkpoint's SQLite
file; a resume compares its own and refuses, in one line naming each difference, when they
differ. Secrets and per-call plumbing (`api_key`, `timeout`, `retries`) are not recorded.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

from pydantic import BaseModel

from langgraph_specsearch.options import flag, flat_index

TABLE = "specsearch_run_options"
NOT_RECORDED = frozenset({"api_key", "timeout", "retries"})
"""Fields that may change between a run and its resume."""


def recorded_options(config: BaseModel) -> dict[str, Any]:
    """The config as recorded: JSON-able values by flat option name (`theta`, `pipeline`)."""
    dumped = config.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for name, leaf in flat_index(type(config)).items():
        if name in NOT_RECORDED:
            continue
        value: Any = dumped
        for key in leaf.path:
            value = value.get(key) if isinstance(value, dict) else None
        flat[name] = value
    return flat


def differences(recorded: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """`--flag recorded -> given` for each option that differs."""
    out = []
    for name in sorted(set(recorded) | set(given)):
        if name in recorded and name in given and recorded[name] != given[name]:
            out.append(f"{flag(name)} {recorded[name]!r} -> {given[name]!r}")
    return out


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (thread_id TEXT PRIMARY KEY, options TEXT)")
    return conn


def record(path: str, thread_id: str, config: BaseModel) -> None:
    """Record (or replace) the options of a new run of `thread_id`."""
    with contextlib.closing(_connect(path)) as conn, conn:
        conn.execute(
            f"INSERT OR REPLACE INTO {TABLE} (thread_id, options) VALUES (?, ?)",
            (thread_id, json.dumps(recorded_options(config))),
        )


def check_resume(path: str, thread_id: str, config: BaseModel) -> None:
    """Raise a one-line ValueError when `config` differs from the one `thread_id` ran with
    (a thread checkpointed before options were recorded is not checked)."""
    with contextlib.closing(_connect(path)) as conn:
        row = conn.execute(
            f"SELECT options FROM {TABLE} WHERE thread_id = ?", (thread_id,)
        ).fetchone()
    if row is None:
        return
    diffs = differences(json.loads(row[0]), recorded_options(config))
    if diffs:
        raise ValueError(
            f"thread {thread_id!r} ran with other options; resume with the recorded ones: "
            + "; ".join(diffs)
        )
