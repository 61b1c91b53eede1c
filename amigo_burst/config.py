"""amigo.toml → typed, validated config objects.

Unknown keys are rejected everywhere (a typo must not silently fall back to a
default). Secrets never live here: they come from .env (see `secrets.py`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from amigo_burst.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "amigo.toml"
Auto = Literal["auto"]


class Strict(BaseModel):
    # nan/inf are no numbers a user means ("learning_rate = nan" must not read as "should be less than 1")
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProjectConfig(Strict):
    name: str = Field(min_length=1)
    # the whole project's money: every attempt of every stage counts (the ledger), and a launch or a
    # pipeline stage that would spend past what is left is refused; none: stage budgets only
    max_usd: float | None = Field(None, gt=0, allow_inf_nan=False)


class ModelConfig(Strict):
    base: str = Field(min_length=1, description="hub id or local directory of the base model")
    arch: str = Field(min_length=1, description="architecture preset for estimates, or a path to config.json")
    method: Literal["auto", "qlora", "lora"] = "auto"


class LoraConfig(Strict):
    r: int = Field(16, ge=1, le=1024)  # higher: more capacity, more memory and optimizer state
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class DatasetConfig(Strict):
    """Either a local file (`path`, JSONL or parquet) or a hub dataset (`hub` + `split`)."""

    path: str | None = None
    hub: str | None = None
    subset: str | None = None
    split: str = "train"
    # files inside the hub repository (globs allowed), read by the packaged json/parquet/csv builder:
    # the way to a dataset whose repository ships a loading script (`datasets` >= 4 refuses those)
    data_files: list[str] | None = Field(None, min_length=1)
    # canonical field -> source column (only the ones that differ need naming)
    columns: dict[str, str] = Field(default_factory=dict)
    max_rows: int | None = Field(None, ge=1)  # rows used at most, drawn by a seeded shuffle
    seed: int = 0  # the shuffle's seed: the same rows every time
    # keep only rows whose `license` column is one of these (lower case, e.g. "mit", "apache-2.0")
    licenses: list[str] | None = Field(None, min_length=1)
    # the stage fails when more than this fraction of the rows read is unusable (missing/empty field...)
    max_bad_fraction: float = Field(0.5, ge=0, le=1)
    # where a hub dataset is prepared: auto = on the target when it is a cloud (no laptop uplink in
    # the way), here = on this machine, target = on the target always
    prepare: Literal["auto", "here", "target"] = "auto"
    # for `plan` before anything is downloaded: average tokens per row (dataset card or a sample)
    tokens_per_row: int | None = Field(None, ge=1)
    # for `plan`: GB of source rows preparation reads to find max_rows usable ones (the card's bytes per
    # row x rows read); default: the stage's tokens x 3.6 bytes (every row read is used)
    read_gb: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if bool(self.path) == bool(self.hub):
            raise ValueError("give exactly one of 'path' or 'hub'")
        if self.data_files and not self.hub:
            raise ValueError("'data_files' names files of a hub dataset: it needs 'hub'")
        if self.data_files and self.subset:
            raise ValueError("give 'subset' or 'data_files', not both (data_files already pick the files)")
        if self.prepare == "target" and not self.hub:
            raise ValueError("prepare = \"target\" is for hub datasets (a local file is prepared here)")
        return self


class StageConfig(Strict):
    dataset: DatasetConfig
    epochs: float = Field(1.0, gt=0)
    max_seq_len: int = Field(2048, ge=64, le=131072)
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    micro_batch: StrictInt | Auto = "auto"  # strict: `micro_batch = true` is no batch size of 1
    grad_accum: StrictInt | Auto = "auto"
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps (demo/smoke runs)")
    target: str | None = None  # default target for this stage; None: [targets].cloud
    max_usd: float | None = Field(None, gt=0)
    max_hours: float | None = Field(None, gt=0)
    # validation: rows held out by a hash of their content (the same ones on every re-run)
    eval_fraction: float = Field(0.02, ge=0, lt=1, description="share of rows held out; 0: no validation")
    eval_max_rows: int = Field(500, ge=0, description="cap on held-out rows")
    eval_steps: int | None = Field(None, ge=1, description="eval loss every N steps; None: train/configs' value")
    keep: Literal["best", "last"] = "best"  # the stage's adapter: lowest eval loss, or the final weights
    save_minutes: float = Field(30, ge=0, description="a checkpoint every N minutes of training too; 0: off")

    @field_validator("micro_batch", "grad_accum", mode="before")
    @classmethod
    def _whole(cls, v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, (int, str)):  # true is not 1, 4.0 is not 4
            raise ValueError(f"must be a whole number >= 1 or \"auto\" (got {str(v).lower()})")
        return v

    @field_validator("micro_batch", "grad_accum")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or \"auto\"")
        return v


class StoreConfig(Strict):
    url: str = "file://.amigo/store"
    endpoint_url: str | None = None  # R2 / B2 / MinIO; None: AWS S3

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("file://") or v.startswith("s3://")):
            raise ValueError(f"unknown store scheme in {v!r}: use file://PATH or s3://bucket/prefix")
        if v.startswith("s3://") and not v[5:].split("/")[0]:
            raise ValueError(f"no bucket in {v!r}")
        return v


class LocalGpuConfig(Strict):
    name: str = "RTX4050-Laptop"
    vram_gib: float = Field(6.0, gt=0)
    usd_per_kwh: float = Field(0.30, ge=0)
    board_power_w: float = Field(115.0, gt=0)


class EvalConfig(Strict):
    """[eval]: the HumanEval run after each stage, on the machine that trained it (train/humaneval.py)."""

    # the first N of the 164 problems (quick runs, the demo); 0: no benchmark; unset: all 164
    limit: int | None = Field(None, ge=0, le=164)
    max_new_tokens: int = Field(512, ge=1, le=8192)  # per answer; 512 covers a HumanEval function with room
    # pipeline: stage N+1 is not launched when stage N's pass@1 fell below its parent's beyond the noise
    # (the whole 95% interval of the change under -regression_margin); `pipeline --force` launches anyway
    stop_on_regression: bool = True
    regression_margin: float = Field(0.0, ge=0, le=1)  # pass@1 points of drop tolerated even beyond the noise


class TargetsConfig(Strict):
    cloud: str = "vast"  # the cloud target of the hybrid plan (stages 2-5)
    local: str = "local"


class AmigoConfig(Strict):
    project: ProjectConfig
    model: ModelConfig
    lora: LoraConfig = LoraConfig()
    stages: dict[int, StageConfig]
    store: StoreConfig = StoreConfig()
    local_gpu: LocalGpuConfig = LocalGpuConfig()
    targets: TargetsConfig = TargetsConfig()
    eval: EvalConfig = EvalConfig()
    path: Annotated[Path | None, Field(exclude=True)] = None  # where it was loaded from

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_keys(cls, v: object) -> object:
        if isinstance(v, dict):
            bad = [k for k in v if not (str(k).isdigit() and 1 <= int(k) <= 5)]
            if bad:
                raise ValueError(f"stage keys must be 1-5, got {', '.join(map(repr, bad))}")
        return v

    @model_validator(mode="after")
    def _columns_are_fields(self) -> AmigoConfig:
        """dataset.columns maps the stage's own fields (README): a key that is none of them is a typo."""
        from train.schema import stage_spec

        for n, sc in self.stages.items():
            fields = stage_spec(n).fields
            bad = [k for k in sc.dataset.columns if k not in fields]
            if bad:
                raise ValueError(f"stages.{n}.dataset.columns: {', '.join(map(repr, bad))} is not a field of stage "
                                 f"{n} (its fields: {', '.join(fields)}); map field = \"source column\"")
        return self

    @property
    def root(self) -> Path:
        """The project folder: where amigo.toml lives (relative paths resolve against it)."""
        return self.path.parent if self.path else Path.cwd()

    def stage(self, n: int) -> StageConfig:
        if n not in self.stages:
            raise UserError(f"{self.path or CONFIG_NAME}: no [stages.{n}] section")
        return self.stages[n]

    def previous_stage(self, n: int) -> int | None:
        """The stage whose adapter stage N continues: the nearest configured stage below N (a stage
        left out of amigo.toml is skipped: without [stages.3], stage 4 continues stage 2's adapter);
        None: N starts from the base model."""
        below = [s for s in self.stages if s < n]
        return max(below) if below else None

    def chain_note(self) -> str:
        """One line saying what a gap in the configured stages means ("" when there is none)."""
        notes = []
        for n in sorted(self.stages):
            prev = self.previous_stage(n)
            skipped = [s for s in range(prev + 1 if prev else 1, n)]
            if skipped:
                what = f"stage {prev}'s adapter" if prev else "the base model"
                notes.append(f"stage {n} continues from {what} (no "
                             + ", ".join(f"[stages.{s}]" for s in skipped) + " in amigo.toml)")
        return "; ".join(notes)

    def resolve(self, p: str) -> Path:
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else self.root / path


def find_config(start: Path | None = None) -> Path:
    """amigo.toml in `start` or the nearest parent; UserError if none."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / CONFIG_NAME).is_file():
            return d / CONFIG_NAME
    raise UserError(f"no {CONFIG_NAME} in {here} or any parent: pass --config PATH")


def _describe(err: ValidationError) -> str:
    e = err.errors()[0]
    # a key is user text: one with a line break (or any unprintable) is quoted, so the error stays one line
    loc = ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in e["loc"]) or "(top level)"
    msg = " ".join(e["msg"].split())
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif e["type"] == "value_error":  # our own validators' words, which name their key themselves when at the top
        msg = msg.removeprefix("Value error, ")
        if not e["loc"]:
            return msg
    return f"{loc}: {msg}"


def parse_config(text: str, source: str = CONFIG_NAME) -> AmigoConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source}: TOML syntax error: {e}") from None
    try:
        return AmigoConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{source}: {_describe(e)}") from None


def load_config(path: Path | str | None = None) -> AmigoConfig:
    p = Path(path) if path else find_config()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file not found: {p}") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as e:
        raise UserError(f"{p}: cannot read: {e.__class__.__name__}") from None
    except OSError as e:  # a file's child (x.toml/sub), /proc/self/mem: any path a user can type
        raise UserError(f"{p}: cannot read: {e.strerror or e.__class__.__name__}") from None
    cfg = parse_config(text, str(p)).model_copy(update={"path": p.resolve()})
    from amigo_burst.targets import check_config_targets  # here: targets are read from the project's sky/

    check_config_targets(cfg)
    return cfg
