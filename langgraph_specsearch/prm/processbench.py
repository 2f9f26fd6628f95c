"""ProcessBench (Zheng et al. 2024, arXiv:2412.06559): find the earliest wrong step.

Each record has `problem`, `steps[]` and `label`: the index of the earliest erroneous step, or
-1 when every step is correct. A PRM predicts the first step whose score is below
`threshold` (-1 when none is), the rule fixed in advance here (0.5 by default: a two-label
PRM's "-" wins). Per split, as in the benchmark's own `run_eval` scripts:

- acc_err: exact-index accuracy on the erroneous records (label != -1);
- acc_cor: accuracy on the correct records (prediction -1);
- F1 = 2 · acc_err · acc_cor / (acc_err + acc_cor), in percent.

(The paper picks the threshold of scalar-score PRMs that maximises F1 on GSM8K; a threshold
tuned on the data it is reported on is not used here.)
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SPLITS = {
    "processbench-gsm8k": "processbench_gsm8k.json.gz",
    "processbench-math": "processbench_math.json.gz",
}


class Record(BaseModel):
    """One ProcessBench test case."""

    id: str
    problem: str
    steps: list[str]
    label: int


class Report(BaseModel):
    """The benchmark metric of one run."""

    dataset: str
    prm: str
    threshold: float
    n: int
    n_erroneous: int
    n_correct: int
    acc_err: float
    acc_cor: float
    f1: float
    seconds: float
    predictions: list[int]


def load_records(dataset: str, limit: int | None = None) -> list[Record]:
    """A shipped split (`processbench-gsm8k`, `processbench-math`) or a JSON / JSONL file.

    `limit` N keeps the first ceil(N/2) erroneous and floor(N/2) correct records (file
    order), so both accuracies, and F1, are defined.
    """
    if dataset in SPLITS:
        blob = resources.files("langgraph_specsearch.data").joinpath(SPLITS[dataset])
        raw: Any = json.loads(gzip.decompress(blob.read_bytes()))
    else:
        path = Path(dataset)
        if not path.is_file():
            names = ", ".join(SPLITS)
            raise ValueError(f"dataset {dataset!r} is neither {names} nor a file")
        text = path.read_text(encoding="utf-8")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            try:
                raw = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise ValueError(f"{dataset}: not JSON or JSONL ({exc})") from None
    if not isinstance(raw, list):
        raise ValueError(f"{dataset}: expected a list of records")
    try:
        records = [Record.model_validate(r) for r in raw]
    except Exception as exc:  # pydantic ValidationError: say which field in one line
        first = str(exc).splitlines()
        raise ValueError(f"{dataset}: not ProcessBench records ({' '.join(first[:2])})") from None
    if limit is None:
        return records
    wrong = [r for r in records if r.label != -1][: (limit + 1) // 2]
    right = [r for r in records if r.label == -1][: limit // 2]
    keep = {id(r) for r in wrong + right}
    return [r for r in records if id(r) in keep]


def earliest_error(scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scored below `threshold`, or -1."""
    return next((i for i, s in enumerate(scores) if s < threshold), -1)


def metric(labels: Sequence[int], predictions: Sequence[int]) -> tuple[float, float, float]:
    """(acc_err, acc_cor, F1) in percent; an empty side counts as 0."""
    err = [p == y for y, p in zip(labels, predictions, strict=True) if y != -1]
    cor = [p == -1 for y, p in zip(labels, predictions, strict=True) if y == -1]
    acc_err = 100.0 * sum(err) / len(err) if err else 0.0
    acc_cor = 100.0 * sum(cor) / len(cor) if cor else 0.0
    f1 = 2 * acc_err * acc_cor / (acc_err + acc_cor) if acc_err + acc_cor else 0.0
    return acc_err, acc_cor, f1


async def evaluate(
    prm: Any,
    records: Sequence[Record],
    *,
    dataset: str = "",
    threshold: float = 0.5,
    concurrency: int = 8,
    on_record: Callable[[int, Record, list[float]], None] | None = None,
) -> Report:
    """Score every record's steps with `prm` and compute the ProcessBench metric.

    PRMs with `ascore_batch` (local transformers PRMs) get all records in batches; others are
    called once per record, `concurrency` at a time.
    """
    started = time.perf_counter()
    scores: list[list[float]] = [[] for _ in records]
    batch = getattr(prm, "ascore_batch", None)
    if batch is not None:
        chunk = 32
        for at in range(0, len(records), chunk):
            part = records[at : at + chunk]
            got = await batch([(r.problem, r.steps) for r in part])
            for k, (r, s) in enumerate(zip(part, got, strict=True)):
                scores[at + k] = s
                if on_record is not None:
                    on_record(at + k, r, s)
    else:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, r: Record) -> None:
            async with sem:
                scores[i] = (await prm.ascore(r.problem, [r.steps]))[0]
            if on_record is not None:
                on_record(i, r, scores[i])

        await asyncio.gather(*(one(i, r) for i, r in enumerate(records)))
    predictions = [earliest_error(s, threshold) for s in scores]
    labels = [r.label for r in records]
    acc_err, acc_cor, f1 = metric(labels, predictions)
    return Report(
        dataset=dataset,
        prm=str(getattr(prm, "name", type(prm).__name__)),
        threshold=threshold,
        n=len(records),
        n_erroneous=sum(1 for y in labels if y != -1),
        n_correct=sum(1 for y in labels if y == -1),
        acc_err=acc_err,
        acc_cor=acc_cor,
        f1=f1,
        seconds=time.perf_counter() - started,
        predictions=predictions,
    )
