"""Stage dataset preparation on this machine: amigo.toml's dataset -> canonical JSONL in .amigo/prepared/.

The work is train/prepare.py's (shared with a target that prepares a hub dataset itself, so both
make the same rows from the same settings): seeded shuffle under max_rows, column map, licence
filter, unusable rows skipped and counted (the stage fails past dataset.max_bad_fraction), lengths
checked with the base tokenizer and the chat formatting the trainer uses. Here: the config turned
into a `Source`, errors turned into one-line UserErrors, and the file named by the sha256 of its
content, so an unchanged dataset produces the same file and the store uploads nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amigo_burst import planner
from amigo_burst.config import AmigoConfig, DatasetConfig
from amigo_burst.errors import UserError, one_line
from train import prepare as shared
from train.schema import StageSpec, TrainInputError

SAMPLE_ROWS = 200  # rows a launch checks here when the target prepares a hub dataset itself


@dataclass(frozen=True)
class Prepared:
    path: Path
    rows: int
    tokens: int  # as the trainer sees them: chat template included (DPO: both sequences)
    tokens_exact: bool  # False: counted as bytes/4 because no tokenizer could be loaded
    sha256: str
    tally: shared.Tally

    def record(self, where: str = "here") -> dict:
        """What the run record keeps about the data (artifacts.dataset)."""
        return {"where": where, "sha256": self.sha256, **self.tally.to_dict()}


def source_of(cfg: AmigoConfig, ds: DatasetConfig) -> shared.Source:
    return shared.Source(
        path=str(cfg.resolve(ds.path)) if ds.path else None, hub=ds.hub, subset=ds.subset, split=ds.split,
        data_files=tuple(ds.data_files or ()), columns=dict(ds.columns), max_rows=ds.max_rows,
        licenses=tuple(ds.licenses or ()), max_bad_fraction=ds.max_bad_fraction, seed=ds.seed)


def settings_hash(cfg: AmigoConfig, stage: int) -> str:
    """The data settings of a stage (source, selection, max_seq_len, tokenizer): what makes its rows."""
    src = source_of(cfg, cfg.stage(stage).dataset)
    key = {"source": json.loads(src.to_json()), "max_seq_len": cfg.stage(stage).max_seq_len,
           "tokenizer": cfg.model.base}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def prepare_stage(cfg: AmigoConfig, spec: StageSpec, out_dir: Path, tokenizer=None, *,
                  limit: int | None = None) -> Prepared:
    """Prepare the stage's rows into out_dir (limit: a sample of that many rows used)."""
    sc = cfg.stage(spec.number)
    src = source_of(cfg, sc.dataset)
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # removed again on bad input
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".prep-", suffix=".jsonl")
    os.close(fd)
    try:
        try:
            tally, sha = shared.prepare(spec, src, Path(tmp), tokenizer=tokenizer, max_len=sc.max_seq_len,
                                        limit=limit, resolve=cfg.resolve)
        except TrainInputError as e:
            raise UserError(str(e)) from None
        final = out_dir / f"stage{spec.number}-{sha[:16]}.jsonl"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for d in created:  # innermost first; a folder something else wrote into stays
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return Prepared(final, tally.used, tally.tokens, tally.exact, sha, tally)


def load_tokenizer(cfg: AmigoConfig):
    """The base model's tokenizer with the chat template the trainer uses; None (byte estimate, no
    length check) when it can't be had."""
    base = cfg.resolve(cfg.model.base)
    try:
        return shared.load_tokenizer(str(base) if base.exists() else cfg.model.base)
    except (AttributeError, TypeError, NameError):  # our bug, not a missing tokenizer: never hide it
        raise
    except ImportError:  # no transformers on this machine: the target counts
        return None
    except Exception as e:  # noqa: BLE001 - no network, gated model: fall back to an estimate
        if base.is_dir():  # a local folder the trainer would fail on, minutes later: refused here
            raise UserError(f"[model] base = {cfg.model.base!r}: the tokenizer in {base} cannot be loaded: "
                            f"{one_line(e, 200)}") from None
        return None


@dataclass(frozen=True)
class StageData:
    """A launch's dataset: prepared here (the whole of it), or on the target (a sample checked here).

    Where a hub dataset goes to a cloud target (dataset.prepare = "auto"), or always with "target",
    the target fetches and prepares it itself with the same code and settings (train/prepare.py via
    train/run.sh, AMIGO_PREPARE = `job`): stage 4's rows would otherwise cross the laptop's uplink
    twice (hub -> laptop -> store -> cloud) while the GPU may already bill."""

    where: str  # "here" | "target"
    prepared: Prepared  # the dataset (here) or the checked sample (target)
    tokens: int  # for the estimate: counted (here) or the sample's tokens per row x max_rows (target)
    job: dict | None = None  # what the target prepares: AMIGO_PREPARE

    @property
    def upload(self) -> Path | None:
        return self.prepared.path if self.where == "here" else None

    def record(self) -> dict:
        rec = self.prepared.record(self.where)
        if self.job is not None:
            rec["settings"] = self.job["settings_hash"]
            rec["sample_rows"] = self.prepared.rows
        return rec

    def line(self) -> str:
        t = self.prepared.tally
        if self.where == "here":
            line = f"{t.used:,} rows of {t.read:,} read, {t.tokens:,} tokens"
        else:
            src = self.job["source"]
            files = f" {', '.join(src['data_files'])}" if src.get("data_files") else ""
            cap = f"up to {src['max_rows']:,} rows" if src.get("max_rows") else "all rows"
            line = (f"prepared on the target from the hub ({src['hub']}{files}, {cap}, ~{self.tokens:,} tokens); "
                    f"checked here on a sample: {t.used:,} rows of {t.read:,} read")
        if not t.exact:
            line += " (estimated: no tokenizer, lengths not checked)"
        elif t.max_len:
            line += f", longest {t.longest:,} of max_seq_len {t.max_len:,}"
        if t.dropped:
            line += f"; dropped {t.dropped:,}: {t.reasons()}"
        if t.trimmed[0]:
            line += f"; context trimmed in {t.trimmed[0]:,} (first: {t.trimmed[1]})"
        return line


def prepared_on_target(cfg: AmigoConfig, stage: int, target_is_local: bool) -> bool:
    ds = cfg.stage(stage).dataset
    return bool(ds.hub) and (ds.prepare == "target" or (ds.prepare == "auto" and not target_is_local))


def stage_data(cfg: AmigoConfig, spec: StageSpec, target_is_local: bool, out_dir: Path, tokenizer,
               limit: int | None = None) -> StageData:
    """The launch's dataset, prepared here or (a sample checked here) left to the target.

    limit (a probe): only the first LIMIT usable rows of the seeded order, here or on the target; the
    tokens for the estimate are still the whole stage's (tokens per row x the stage's rows)."""
    sc = cfg.stage(spec.number)
    if not prepared_on_target(cfg, spec.number, target_is_local):
        p = prepare_stage(cfg, spec, out_dir, tokenizer, limit=limit)
        return StageData("here", p, p.tokens if limit is None else _whole_stage_tokens(cfg, spec.number, p))
    sample = prepare_stage(cfg, spec, out_dir, tokenizer, limit=min(SAMPLE_ROWS, limit or SAMPLE_ROWS))
    tokens = _whole_stage_tokens(cfg, spec.number, sample)
    job = {"source": json.loads(source_of(cfg, sc.dataset).to_json()), "max_length": sc.max_seq_len,
           "settings_hash": settings_hash(cfg, spec.number),
           # the target's first rows must be these (same code, same seed): a changed hub dataset shows
           "check": {"rows": sample.rows, "sha256": sample.sha256} if sample.tally.exact else {}}
    if limit is not None:
        job["limit"] = limit  # train/prepare.py stops after LIMIT usable rows
    return StageData("target", sample, tokens, job)


def _whole_stage_tokens(cfg: AmigoConfig, stage: int, sample: Prepared) -> int:
    """The stage's tokens from a sample: its tokens per row x the rows the stage uses (max_rows)."""
    rows = planner.stage_rows(cfg, stage)
    if rows:
        return int(sample.tokens / max(sample.rows, 1) * rows)
    return planner.stage_tokens(cfg, stage) or sample.tokens  # all rows of a hub dataset: how many, unknown
