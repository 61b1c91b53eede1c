"""Stage dataset preparation: source rows (JSONL, parquet or a hub dataset) -> canonical JSONL.

Each row is mapped to the stage's canonical fields (train/schema.py) through
the config's column map, validated, and written to `.amigo/prepared/`. The
file name is the sha256 of its content, so an unchanged dataset produces the
same file and the store uploads nothing for it the second time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amigo_burst.config import AmigoConfig, DatasetConfig
from amigo_burst.errors import UserError
from train.schema import StageSpec, validate_row

MAX_LINE_BYTES = 8 * 2**20  # a single JSONL row above 8 MiB is a broken file, not a training example


@dataclass(frozen=True)
class Prepared:
    path: Path
    rows: int
    tokens: int  # summed over the text fields of every row
    tokens_exact: bool  # False: counted as bytes/4 because no tokenizer could be loaded
    sha256: str


def _iter_jsonl(path: Path):
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if len(raw) > MAX_LINE_BYTES:
                raise UserError(f"{path}:{lineno}: line is {len(raw) / 2**20:.0f} MiB (limit 8 MiB)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path}:{lineno}: not UTF-8") from None
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def _iter_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise UserError(f"{path}: not a readable parquet file ({e.__class__.__name__})") from None
    yield from enumerate(table.to_pylist(), 1)


def _iter_hub(ds: DatasetConfig):
    try:
        from datasets import load_dataset

        data = load_dataset(ds.hub, ds.subset, split=ds.split, streaming=True)
    except Exception as e:  # noqa: BLE001 - network, auth, missing split...
        raise UserError(f"dataset {ds.hub} ({ds.split}): cannot load: {str(e).splitlines()[0][:200]}") from None
    yield from enumerate(data, 1)


def source_rows(cfg: AmigoConfig, ds: DatasetConfig):
    """(location, row) pairs from the configured source."""
    if ds.hub:
        for i, row in _iter_hub(ds):
            yield f"{ds.hub}[{i}]", row
        return
    path = cfg.resolve(ds.path)
    if not path.is_file():
        raise UserError(f"dataset file not found: {path}")
    it = _iter_parquet(path) if path.suffix == ".parquet" else _iter_jsonl(path)
    for lineno, row in it:
        yield f"{path}:{lineno}", row


def to_canonical(spec: StageSpec, row: object, columns: dict[str, str]) -> object:
    """Rename source columns to canonical fields; lists of strings (e.g. stack traces) are joined."""
    if not isinstance(row, dict):
        return row
    out = {}
    for field in spec.fields:
        value = row.get(columns.get(field, field))
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(value)
        if value is not None:
            out[field] = value
    return out


def prepare_stage(cfg: AmigoConfig, spec: StageSpec, out_dir: Path, tokenizer=None) -> Prepared:
    ds = cfg.stage(spec.number).dataset
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # removed again on bad input
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".prep-", suffix=".jsonl")
    h = hashlib.sha256()
    rows = tokens = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for where, row in source_rows(cfg, ds):
                canon = to_canonical(spec, row, ds.columns)
                problem = validate_row(spec, canon)
                if problem:
                    raise UserError(f"{where}: {problem}")
                line = json.dumps(canon, ensure_ascii=False) + "\n"
                f.write(line)
                h.update(line.encode())
                rows += 1
                tokens += count_tokens(tokenizer, [canon[k] for k in spec.fields if k in canon])
                if ds.max_rows and rows >= ds.max_rows:
                    break
        if rows == 0:
            raise UserError(f"stage {spec.number} dataset has no rows")
        final = out_dir / f"stage{spec.number}-{h.hexdigest()[:16]}.jsonl"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for d in created:  # innermost first; a folder something else wrote into stays
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return Prepared(final, rows, tokens, tokenizer is not None, h.hexdigest())


def count_tokens(tokenizer, texts: list[str]) -> int:
    if tokenizer is None:
        return sum(len(t.encode()) for t in texts) // 4  # ~4 bytes per BPE token on English/code
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def load_tokenizer(cfg: AmigoConfig):
    """The base model's tokenizer, offline-first; None (byte estimate) when it can't be had."""
    base = cfg.resolve(cfg.model.base)
    source = str(base) if base.exists() else cfg.model.base
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source)
    except Exception:  # noqa: BLE001 - no transformers, no network, gated model: fall back to an estimate
        return None
