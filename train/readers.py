"""Local dataset files as rows: JSON lines, parquet, CSV/TSV, chosen by the file's extension.

Each reader yields (file:line, row) in file order, or in a seeded order (the same every time) when a
seed is given. A row that cannot even be read is a `Bad` (its reason), counted by train/prepare.py
with the other unusable rows. A UTF-8 BOM is no part of the first row. A file with a header (CSV,
parquet) must have every column the column map names: said at once, with the columns it does have.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from train.schema import TrainInputError

MAX_LINE_BYTES = 8 * 2**20  # a JSONL row above 8 MiB is a broken line, not a training example
LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv", ".tsv")  # a local dataset file, by its extension


def local_rows(path: Path, columns: list[str], mapped: list[str], seed: int | None) -> Iterator[tuple[str, object]]:
    """(file:line, row) of a local dataset file, read by its extension; in a seeded order with a seed.
    COLUMNS: the ones the stage reads (parquet reads only those); MAPPED: the ones amigo.toml's column
    map names, which a file with a header must have."""
    if path.is_dir():
        raise TrainInputError(f"dataset path {path} is a folder: name the file ({', '.join(LOCAL_FORMATS)})")
    if not path.is_file():
        raise TrainInputError(f"dataset file not found: {path}")
    kind = path.suffix.lower()
    if kind == ".parquet":
        yield from _iter_parquet(path, columns, seed, mapped)
    elif kind in (".csv", ".tsv"):
        yield from _iter_csv(path, mapped, seed, "\t" if kind == ".tsv" else ",")
    elif kind in (".jsonl", ".json", ".ndjson"):
        yield from _iter_jsonl(path, seed)
    else:  # an .xlsx or .txt read as JSON lines is every row "invalid JSON": refused by its name instead
        raise TrainInputError(f"dataset file {path}: {kind or 'no extension'} is not a format amigo-burst reads "
                              f"({', '.join(LOCAL_FORMATS)})")


class Bad(str):
    """A row that could not even be read (bad JSON, not UTF-8, an 8 MiB line): its reason."""


def _jsonl_line(raw: bytes) -> object:
    if len(raw) > MAX_LINE_BYTES:
        return Bad(f"line over 8 MiB ({len(raw) / 2**20:.0f} MiB)")
    try:
        text = raw.decode("utf-8-sig")  # a BOM (Windows editors write one) is no part of row 1's JSON
    except UnicodeDecodeError:
        return Bad("not UTF-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return Bad(f"invalid JSON ({e.msg})")


def _iter_jsonl(path: Path, seed: int | None) -> Iterator[tuple[str, object]]:
    """(file:line, row) in file order; with a seed, in a seeded order of the lines (one pass to find
    each line's byte offset, then a seek per row: a multi-GB file is never held in memory)."""
    with path.open("rb") as f:
        if seed is None:
            for lineno, raw in enumerate(f, 1):
                if raw.strip():
                    yield f"{path}:{lineno}", _jsonl_line(raw)
            return
        offsets, pos = [], 0
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                offsets.append((lineno, pos))
            pos += len(raw)
        random.Random(seed).shuffle(offsets)
        for lineno, off in offsets:
            f.seek(off)
            yield f"{path}:{lineno}", _jsonl_line(f.readline())


def _iter_parquet(path: Path, columns: list[str], seed: int | None,
                  mapped: list[str] = ()) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise TrainInputError(f"{path}: not a readable parquet file ({e.__class__.__name__})") from None
    _check_columns(path, list(mapped), pf.schema_arrow.names)
    try:
        have = [c for c in columns if c in pf.schema_arrow.names] or None
        table = pf.read(columns=have)  # only the mapped columns: a wide file stays small in memory
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise TrainInputError(f"{path}: not a readable parquet file ({e.__class__.__name__})") from None
    order = list(range(table.num_rows))
    if seed is not None:
        random.Random(seed).shuffle(order)
    for i in order:
        yield f"{path}:{i + 1}", table.slice(i, 1).to_pylist()[0]


def _iter_csv(path: Path, columns: list[str], seed: int | None, delimiter: str) -> Iterator[tuple[str, object]]:
    """CSV/TSV rows (header line: the column names) as dicts of strings; a BOM is dropped."""
    import csv

    csv.field_size_limit(MAX_LINE_BYTES)  # a code context is longer than csv's default 128 kB field
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            _check_columns(path, columns, reader.fieldnames or [])
            rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    except UnicodeDecodeError:
        raise TrainInputError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise TrainInputError(f"{path}: not a readable CSV file ({e})") from None
    if seed is not None:
        random.Random(seed).shuffle(rows)
    yield from rows


def _check_columns(path: Path, mapped: list[str], have: list[str]) -> None:
    """A file with a header (CSV, parquet): a column that amigo.toml's columns map names must be in it."""
    missing = [c for c in mapped if c not in have]
    if missing:
        raise TrainInputError(f"dataset {path}: column{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(repr(c) for c in missing)} (dataset.columns) not in the file; "
                              f"its columns: {', '.join(have) or '(none)'}")
