"""Stage data as real datasets are: source rows -> canonical, length-checked JSONL, with a tally.

One implementation, two callers: the controller on the laptop (amigo_burst/lifecycle/prepare.py)
and, for a hub dataset prepared where it trains, the target itself (`python -m train.prepare`,
from train/run.sh). Same settings in, same rows out.

    rows of the source (JSONL, parquet, or a hub dataset: streamed, through its data files when it
    ships a loading script)  ->  seeded shuffle when max_rows caps them  ->  column map, lists of
    strings joined  ->  licence filter  ->  validation  ->  token length as the trainer will see it
    (the stage's chat formatting, train/formats.py, through the base tokenizer's chat template):
    over max_seq_len -> context trimmed (stages 2, 3) or the row dropped  ->  JSONL.

A row that cannot be used (missing or empty field, wrong type, invalid JSON) is skipped and
counted; the stage fails only when more than `max_bad_fraction` of the rows read are such rows.
Filtered rows (licence, too long) are reported but are choices, not defects. Every reason is
reported with its count and the first row it hit (file:line, or hub[n] in the seeded stream).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train.formats import CONTEXT_FIELDS, sequences, trim
from train.readers import Bad, local_rows
from train.schema import EXIT_BAD_INPUT, StageSpec, TrainInputError, stage_spec, validate_row

SHUFFLE_BUFFER = 1000  # streamed hub rows held for the seeded shuffle: 1,000 x ~49 kB (OpenCodeReasoning) = 49 MB
CHECK_EVERY = 1000  # rows read between bad-fraction checks: a wrong column fails in seconds, not after 500k rows
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class Source:
    """Where a stage's rows come from and how they are chosen (amigo.toml's [stages.N].dataset)."""

    path: str | None = None  # local JSONL / parquet (absolute, or relative to the working directory)
    hub: str | None = None  # "org/name" on the dataset hub
    subset: str | None = None
    split: str = "train"
    data_files: tuple[str, ...] = ()  # files inside the hub repo (globs): bypasses a loading script
    columns: dict[str, str] = field(default_factory=dict)  # canonical field -> source column
    max_rows: int | None = None  # rows used at most, drawn by a seeded shuffle
    licenses: tuple[str, ...] = ()  # keep rows whose `license` column is one of these (empty: all)
    max_bad_fraction: float = 0.5
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Source:
        d = json.loads(text)
        return cls(**{**d, "data_files": tuple(d.get("data_files") or ()), "licenses": tuple(d.get("licenses") or ())})

    @property
    def name(self) -> str:
        return self.hub or self.path or "?"


@dataclass
class Tally:
    """What preparation did with the rows, for the report, the run record and `rehearse`."""

    read: int = 0
    used: int = 0
    tokens: int = 0  # templated tokens of the rows used (DPO: chosen + rejected sequences)
    longest: int = 0  # the longest templated sequence used
    max_len: int = 0
    exact: bool = True  # False: no tokenizer, tokens estimated as bytes / 4 and lengths not checked
    unusable: dict[str, list] = field(default_factory=dict)  # reason -> [count, first where]
    filtered: dict[str, list] = field(default_factory=dict)  # licence, too long: [count, first where]
    trimmed: list = field(default_factory=lambda: [0, ""])  # context trimmed to fit: [count, first where]
    columns: list = field(default_factory=list)  # the source's column names, as its first row has them

    @property
    def bad(self) -> int:
        return sum(c for c, _ in self.unusable.values())

    @property
    def dropped(self) -> int:
        return self.bad + sum(c for c, _ in self.filtered.values())

    def note(self, kind: dict, reason: str, where: str) -> None:
        entry = kind.setdefault(reason, [0, where])
        entry[0] += 1

    def reasons(self) -> str:
        """'field 'error' is empty x38 (first: x.parquet:1), ...' most frequent first."""
        items = sorted({**self.unusable, **self.filtered}.items(), key=lambda kv: -kv[1][0])
        return ", ".join(f"{r} x{c} (first: {w})" for r, (c, w) in items)

    def to_dict(self) -> dict:
        return {"read": self.read, "used": self.used, "dropped": self.dropped, "tokens": self.tokens,
                "longest": self.longest, "max_len": self.max_len, "exact": self.exact,
                "unusable": self.unusable, "filtered": self.filtered, "trimmed": self.trimmed}


# --- reading -------------------------------------------------------------------------------------


def _iter_hub(src: Source, columns: list[str], shuffle: bool) -> Iterator[tuple[str, object]]:
    """Streamed hub rows. With data_files: the packaged builder over hf:// URLs, which never runs
    (or refuses, as datasets >= 4 does) the repository's loading script."""
    try:
        from datasets import load_dataset

        if src.data_files:
            builder = BUILDERS.get(Path(src.data_files[0]).suffix.lower())
            if builder is None:
                raise TrainInputError(f"{src.hub}: data_files {src.data_files[0]!r}: expected .jsonl, .json, "
                                      ".parquet or .csv")
            urls = [f"hf://datasets/{src.hub}/{f.lstrip('/')}" for f in src.data_files]
            ds = load_dataset(builder, data_files=urls, split="train", streaming=True)
        else:
            ds = load_dataset(src.hub, src.subset, split=src.split, streaming=True)
        names = ds.column_names
        if names:
            missing = [c for c in columns if c not in names and c != "license"]
            if missing and len(missing) == len([c for c in columns if c != "license"]):
                raise TrainInputError(f"{src.hub}: none of the mapped columns {missing} is in the dataset "
                                      f"(its columns: {', '.join(names)})")
            ds = ds.select_columns([c for c in columns if c in names])
        if shuffle:  # shard order and a buffer of rows, both from the seed: the same rows every time
            ds = ds.shuffle(seed=src.seed, buffer_size=SHUFFLE_BUFFER)
        for i, row in enumerate(ds, 1):
            yield f"{src.hub}[{i}]", row
    except TrainInputError:
        raise
    except Exception as e:  # noqa: BLE001 - network, auth, missing split, a loading script...
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:300]
        raise TrainInputError(f"dataset {src.hub} ({src.split}): cannot load: {first}") from None


def source_rows(src: Source, spec: StageSpec, resolve: Callable[[str], Path] = Path) -> Iterator[tuple[str, object]]:
    """(where, row) pairs from the source; shuffled with the seed when max_rows caps them."""
    columns = sorted({src.columns.get(f, f) for f in spec.fields} | ({"license"} if src.licenses else set()))
    shuffle = src.max_rows is not None
    if src.hub:
        yield from _iter_hub(src, columns, shuffle)
        return
    yield from local_rows(resolve(src.path or ""), columns, sorted(set(src.columns.values())),
                          src.seed if shuffle else None)


def canonical(spec: StageSpec, row: object, columns: dict[str, str]) -> object:
    """Source columns -> canonical fields. A list of strings (mbpp_w_stacktraces' per-test stack
    traces) becomes its distinct non-empty items, one per line: a passing attempt's list is empty."""
    if not isinstance(row, dict):
        return row
    out = {}
    for f in spec.fields:
        value = row.get(columns.get(f, f))
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(dict.fromkeys(v.strip("\n") for v in value if v.strip()))
        if value is not None:
            out[f] = value
    return out


# --- lengths -------------------------------------------------------------------------------------


def seq_lengths(tokenizer, spec: StageSpec, row: dict) -> list[int]:
    """Token count of each sequence the trainer builds from the row, chat template included
    (what TRL's tokenize step does: apply_chat_template(messages, tokenize=True))."""
    return [len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])
            for m in sequences(spec, row)]


def fit(tokenizer, spec: StageSpec, row: dict, max_len: int) -> tuple[dict | None, list[int], bool]:
    """(row that fits, its lengths, trimmed?) or (None, full lengths, False) when it cannot fit.
    Only a context field is ever shortened (binary search on kept characters), never the answer."""
    lengths = seq_lengths(tokenizer, spec, row)
    if max(lengths) <= max_len:
        return row, lengths, False
    if spec.number not in CONTEXT_FIELDS:
        return None, lengths, False
    name, side = CONTEXT_FIELDS[spec.number]
    text = row[name]
    lo, hi, best = 1, len(text) - 1, None
    while lo <= hi:  # ~log2(len) template renders, only for the rows that are too long
        mid = (lo + hi) // 2
        cand = {**row, name: trim(text, mid, side)}
        cl = seq_lengths(tokenizer, spec, cand)
        if max(cl) <= max_len:
            best, lo = (cand, cl), mid + 1
        else:
            hi = mid - 1
    if best is None:
        return None, lengths, False
    return best[0], best[1], True


def estimate_tokens(spec: StageSpec, row: dict) -> int:
    return sum(len(m["content"].encode()) for conv in sequences(spec, row) for m in conv) // 4  # ~4 bytes/token


def load_tokenizer(model_id: str):
    """The tokenizer exactly as the trainer loads it (pad token, fallback chat template)."""
    from train.model import load_tokenizer as trainer_tokenizer

    tok, _template_note = trainer_tokenizer(model_id)  # (tokenizer, which chat template it got)
    tok.model_max_length = sys.maxsize  # we measure long rows on purpose: no "longer than maximum" warning
    return tok


# --- the whole stage -----------------------------------------------------------------------------


def prepare(spec: StageSpec, src: Source, out: Path, *, tokenizer=None, max_len: int = 0,
            limit: int | None = None, resolve: Callable[[str], Path] = Path) -> tuple[Tally, str]:
    """Write the stage's usable rows to `out` (canonical JSONL); returns (tally, sha256 of the file).

    limit: stop after this many rows used (a sample), whatever max_rows says.
    TrainInputError when nothing is usable or more than max_bad_fraction of the rows read are unusable.
    """
    tally = Tally(max_len=max_len, exact=tokenizer is not None)
    cap = min(x for x in (src.max_rows, limit) if x) if (src.max_rows or limit) else None
    allowed = {x.lower() for x in src.licenses}
    h = hashlib.sha256()
    with out.open("w", encoding="utf-8") as f:
        for where, raw in source_rows(src, spec, resolve):
            tally.read += 1
            if tally.read % CHECK_EVERY == 0:
                _check_bad(spec, src, tally)
            if isinstance(raw, Bad):
                tally.note(tally.unusable, str(raw), where)
                continue
            if allowed and isinstance(raw, dict) and str(raw.get("license") or "").lower() not in allowed:
                tally.note(tally.filtered, "licence not in dataset.licenses", f"{where} ({raw.get('license')})")
                continue
            if not tally.columns and isinstance(raw, dict):
                tally.columns = list(raw)
            row = canonical(spec, raw, src.columns)
            reason = missing_column(validate_row(spec, row), src.columns, raw)
            if reason:
                tally.note(tally.unusable, reason, where)
                continue
            if tokenizer is not None:
                fitted, lengths, trimmed = fit(tokenizer, spec, row, max_len or 10**9)
                if fitted is None:
                    tally.note(tally.filtered, f"over max_seq_len {max_len}", f"{where} ({max(lengths):,} tokens)")
                    continue
                if trimmed:
                    tally.trimmed[0] += 1
                    tally.trimmed[1] = tally.trimmed[1] or where
                row = fitted
                tally.tokens += sum(lengths)
                tally.longest = max(tally.longest, *lengths)
            else:
                tally.tokens += estimate_tokens(spec, row)
            line = json.dumps(row, ensure_ascii=False) + "\n"
            f.write(line)
            h.update(line.encode())
            tally.used += 1
            if cap and tally.used >= cap:
                break
    _check_bad(spec, src, tally, final=True)
    return tally, h.hexdigest()


def missing_column(reason: str | None, columns: dict[str, str], raw: object) -> str | None:
    """A missing field the column map renames is the source column that is missing: say that one."""
    if reason and reason.startswith("missing field '") and isinstance(raw, dict):
        f = reason[len("missing field '"):-1]
        if columns.get(f, f) != f and columns[f] not in raw:
            return f"missing column '{columns[f]}' (columns.{f})"
    return reason


def _columns_hint(t: Tally) -> str:
    """When rows miss fields or columns: the columns the source does have (the map's other side)."""
    if t.columns and any(r.startswith("missing ") for r in t.unusable):
        return f"; the source's columns: {', '.join(map(str, t.columns[:20]))}"
    return ""


def _check_bad(spec: StageSpec, src: Source, t: Tally, final: bool = False) -> None:
    considered = t.read - sum(c for c, _ in t.filtered.values())
    if considered and t.bad / considered > src.max_bad_fraction:
        raise TrainInputError(
            f"stage {spec.number} dataset {src.name}: {t.bad} of {considered} rows unusable "
            f"({100 * t.bad / considered:.0f}%, more than dataset.max_bad_fraction {src.max_bad_fraction:g}): "
            f"{t.reasons()}{_columns_hint(t)}")
    if final and t.used == 0:
        why = f": {t.reasons()}{_columns_hint(t)}" if t.dropped else ""
        raise TrainInputError(f"stage {spec.number} dataset {src.name}: no usable rows of {t.read} read{why}")


def summary(spec: StageSpec, t: Tally) -> str:
    """One line for logs: read / used / dropped with reasons, tokens, longest vs max_seq_len."""
    parts = [f"stage {spec.number} data: {t.read:,} rows read, {t.used:,} used, {t.dropped:,} dropped"]
    if t.dropped:
        parts[0] += f" ({t.reasons()})"
    if t.trimmed[0]:
        parts.append(f"{t.trimmed[0]:,} with context trimmed (first: {t.trimmed[1]})")
    parts.append(f"{t.tokens:,} tokens" + ("" if t.exact else " (estimated: no tokenizer)"))
    if t.exact and t.max_len:
        parts.append(f"longest {t.longest:,} of max_seq_len {t.max_len:,}")
    return "; ".join(parts)


def first_rows_sha(path: Path, n: int) -> str:
    """sha256 of a prepared file's first n lines: the laptop's sample, if the source did not change."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for _, line in zip(range(n), f, strict=False):
            h.update(line)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """`python -m train.prepare --stage N --job JSON --model M --out FILE`: the target prepares a hub
    dataset itself (amigo.toml dataset.prepare = "target", or "auto" on a cloud target).

    JSON: {"source": Source, "max_length": max_seq_len, "check": {"rows": K, "sha256": ...}, "limit": N}; limit
    (optional, a probe) stops after N usable rows; check
    (optional) is the laptop's sample: the first K rows here must hash the same, else the hub's data
    changed since the launch checked it (said in the log, not fatal)."""
    p = argparse.ArgumentParser(prog="python -m train.prepare", description=main.__doc__.splitlines()[0])
    p.add_argument("--stage", required=True)
    p.add_argument("--job", required=True, help="what to prepare, as JSON (the controller writes it)")
    p.add_argument("--model", required=True, help="base model whose tokenizer counts the tokens")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        spec = stage_spec(a.stage)
        job = json.loads(a.job)
        src = Source.from_json(json.dumps(job["source"]))
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        tally, sha = prepare(spec, src, tmp, tokenizer=load_tokenizer(a.model), max_len=int(job["max_length"]),
                             limit=job.get("limit"))  # a probe: only the rows its steps need
        os.replace(tmp, out)
    except (TrainInputError, ValueError, KeyError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(summary(spec, tally), flush=True)
    info = {**tally.to_dict(), "sha256": sha, "where": "target"}
    check = job.get("check") or {}
    if check.get("rows"):
        info["sample_matches"] = first_rows_sha(out, int(check["rows"])) == check.get("sha256")
        if not info["sample_matches"]:
            print(f"warning: the first {check['rows']} rows differ from the sample checked at launch "
                  "(the hub's data changed since?)", flush=True)
    print("AMIGO_DATA " + json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
