"""Evaluation sets: GSM8K test and MATH-500 (shipped, see data/SOURCES.md) or a JSONL file."""

from __future__ import annotations

import gzip
import json
import random
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from langgraph_specsearch.answers import gsm8k_gold, math_gold

SHIPPED = {"gsm8k": "data/gsm8k_test.jsonl.gz", "math500": "data/math500_test.jsonl.gz"}


class Problem(BaseModel):
    """One evaluation problem: a stable id, the question and the gold answer."""

    id: str
    question: str
    gold: str


def _read_shipped(name: str) -> list[dict[str, Any]]:
    """Records of a shipped dataset."""
    raw = files("langgraph_specsearch").joinpath(SHIPPED[name]).read_bytes()
    text = gzip.decompress(raw).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a user's JSONL file (one-line errors for bad input)."""
    if not path.is_file():
        raise ValueError(
            f"--dataset: no such file {str(path)!r} (expected gsm8k, math500 or a JSONL path)"
        )
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object per line")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def _problem(record: dict[str, Any], index: int, source: str) -> Problem:
    """A problem from a GSM8K-style (`question`/`answer` with `####`) or MATH-style record."""
    question = record.get("question") or record.get("problem")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{source} record {index}: needs a 'question' or 'problem' field")
    answer = record.get("answer")
    if isinstance(answer, (int, float)):
        answer = str(answer)
    if isinstance(answer, str) and "####" in answer:
        gold = gsm8k_gold(answer)
    elif (isinstance(answer, str) and answer.strip()) or record.get("solution"):
        gold = math_gold({"answer": answer or "", "solution": record.get("solution") or ""})
    else:
        raise ValueError(f"{source} record {index}: needs an 'answer' field")
    pid = record.get("unique_id") or record.get("id") or f"{source}-{index}"
    return Problem(id=str(pid), question=question, gold=gold.strip())


def load_problems(
    dataset: str,
    *,
    split: str = "test",
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> list[Problem]:
    """The problems of `dataset` (`gsm8k`, `math500` or a JSONL path), optionally cut down.

    `limit` keeps the first N problems; `sample` draws N at random with `seed` (without
    replacement, in the dataset's order). Ids: MATH's `unique_id`, else the record's `id`, else
    `<dataset>-<line index>`, so they stay the same across runs (`--resume` relies on it).
    """
    if limit is not None and limit < 1:
        raise ValueError("--limit must be >= 1")
    if sample is not None and sample < 1:
        raise ValueError("--sample must be >= 1")
    if dataset in SHIPPED:
        if split != "test":
            raise ValueError(f"--split: only the test split of {dataset} ships with the package")
        records, source = _read_shipped(dataset), dataset
    else:
        path = Path(dataset)
        records, source = _read_jsonl(path), path.stem
    problems = [_problem(r, i, source) for i, r in enumerate(records)]
    if len({p.id for p in problems}) != len(problems):
        raise ValueError(f"{source}: problem ids are not unique")
    if sample is not None:
        chosen = sorted(
            random.Random(seed).sample(range(len(problems)), min(sample, len(problems)))
        )
        problems = [problems[i] for i in chosen]
    if limit is not None:
        problems = problems[:limit]
    return problems


def warmup_problem(dataset: str, chosen: list[Problem], *, split: str = "test") -> Problem | None:
    """A problem of the same dataset outside `chosen` (warms the models up, never measured)."""
    taken = {p.id for p in chosen}
    for problem in load_problems(dataset, split=split):
        if problem.id not in taken:
            return problem
    return None
