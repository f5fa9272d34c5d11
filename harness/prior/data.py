"""Pick the evaluated subset of a benchmark and write it where lm-eval can read it.

Why a subset file rather than lm-eval's `--limit`: `--limit N` takes the first N documents, which
are not a random sample (HellaSwag's first rows are all one activity, MMLU's first subject is
abstract algebra). We draw a seeded sample once (stratified by subject for MMLU), write exactly
those records as JSONL, and point the task at that file. Every model sees the same items in the
same order, so before/after comparisons are paired, and the standalone lm-eval CLI given the same
task YAMLs evaluates the same documents.

Files live in `cache_dir()/prior-data/<content-hash>/`; the hash covers the bytes written, so a
changed source file, adapter, limit or seed yields a new folder and never a stale one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from ..hashing import hash_obj, hash_text
from ..paths import cache_dir
from .adapters import ADAPTERS, Adapted


@dataclass
class Prepared:
    """The subset of one benchmark, written to disk."""

    benchmark: str
    split: str
    ids: list[str]                          # evaluated item ids, in evaluation order
    records: list[dict]                     # the matching records
    folder: Path                            # cache folder holding the JSONL files
    files: dict[str, dict[str, Path]]       # part ('' or MMLU subject) -> split -> file
    part_ids: dict[str, list[str]]          # part -> item ids in that file's order (doc_id order)
    data_hash: str
    total: int                              # items in the full benchmark
    sources: list[Path] = field(default_factory=list)


def _allocate(sizes: dict[str, int], limit: int) -> dict[str, int]:
    """Largest-remainder allocation of `limit` across strata, proportional to their sizes."""
    total = sum(sizes.values())
    exact = {k: limit * n / total for k, n in sizes.items()}
    quota = {k: int(v) for k, v in exact.items()}
    left = limit - sum(quota.values())
    for k in sorted(sizes, key=lambda k: (-(exact[k] - quota[k]), k))[:left]:
        quota[k] += 1
    return quota


def select(adapted: Adapted, limit: int | None, seed: int) -> list[int]:
    """Indices (sorted, source order) of a seeded subset; all items when `limit` is None."""
    n = len(adapted.records)
    if limit is None:
        return list(range(n))
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    if limit > n:
        raise DataError(f"{adapted.sources[0]}: limit {limit} is larger than the {n} items of "
                        f"{adapted.benchmark}")
    if not adapted.strata:
        rng = random.Random(f"{seed}:{adapted.benchmark}")
        return sorted(rng.sample(range(n), limit))
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(adapted.strata):
        groups.setdefault(s, []).append(i)
    quota = _allocate({s: len(v) for s, v in groups.items()}, limit)
    chosen = []
    for s, members in groups.items():
        rng = random.Random(f"{seed}:{adapted.benchmark}:{s}")
        chosen += rng.sample(members, quota[s])
    return sorted(chosen)


def _dump(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def prepare(benchmark: str, data_dir: Path, limit: int | None, seed: int,
            root: Path | None = None) -> Prepared:
    """Adapt, subset and write one benchmark; reuse the folder when it already exists."""
    adapted = ADAPTERS[benchmark](Path(data_dir))
    idx = select(adapted, limit, seed)
    ids = [adapted.ids[i] for i in idx]
    records = [adapted.records[i] for i in idx]
    texts: dict[str, str] = {}          # relative file name -> content
    layout: dict[str, dict[str, str]] = {}
    part_ids: dict[str, list[str]] = {}
    if adapted.strata:
        by_part: dict[str, list[int]] = {}
        for i in idx:
            by_part.setdefault(adapted.strata[i], []).append(i)
        for part, members in by_part.items():
            name = f"{part}.{adapted.split}.jsonl"
            texts[name] = _dump([adapted.records[i] for i in members])
            layout[part] = {adapted.split: name}
            part_ids[part] = [adapted.ids[i] for i in members]
            if part in adapted.fewshot:
                texts[f"{part}.dev.jsonl"] = _dump(adapted.fewshot[part])
                layout[part]["dev"] = f"{part}.dev.jsonl"
    else:
        name = f"{benchmark}.{adapted.split}.jsonl"
        texts[name] = _dump(records)
        layout[""] = {adapted.split: name}
        part_ids[""] = ids
    data_hash = hash_obj({"benchmark": benchmark, "files": {k: hash_text(v, 32) for k, v in texts.items()}})
    base = Path(root) if root else cache_dir() / "prior-data"
    folder = base / data_hash
    if not folder.is_dir():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{data_hash}-"))
        try:
            for rel, text in texts.items():
                (tmp / rel).write_text(text, encoding="utf-8")
            os.replace(tmp, folder)  # atomic: a killed run leaves no half-written folder
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not folder.is_dir():
                raise
    files = {part: {split: folder / rel for split, rel in splits.items()} for part, splits in layout.items()}
    return Prepared(benchmark, adapted.split, ids, records, folder, files, part_ids, data_hash,
                    len(adapted.records), list(adapted.sources))
