"""The entrypoint's configuration: `python -m train` arguments + YAML + --set -> one TrainConfig.

Precedence, lowest first: built-in defaults < --config YAML < --set key=value < explicit flags
(--model, --method, --data, ...). train/run.sh passes exactly the flags below.
Every mistake is a TrainInputError (one line, exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from train.schema import StageSpec, TrainInputError, stage_spec


@dataclass
class TrainConfig:
    stage: int = 1
    # inputs
    model: str = ""  # hub id or local dir
    # lora (bf16/fp16 base on GPU, fp32 on CPU) | qlora (NF4 base, bf16/fp16 compute) | auto: the method
    # --adapter-from's amigo_adapter.json names (one method for the whole chain), else lora
    method: str = "auto"
    data: str = ""  # .jsonl / .parquet with the stage's canonical fields, or a hub id
    data_split: str = "train"
    adapter_from: str = ""  # previous stage's adapter dir (stages 2-5)
    from_base: bool = False  # stage > 1 without a previous adapter: start a fresh adapter on the base
    system_prompt: str | None = None
    # outputs
    output_dir: str = "outputs"
    resume: str = "auto"  # auto | never | CHECKPOINT_DIR
    max_runtime_s: float = 0.0  # 0: no budget
    report_to: str = "none"  # none | tensorboard | wandb
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.03  # < 1: fraction of total steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    max_length: int = 2048
    # Rows over max_length are a last resort (the controller drops or trims them before training): keep_start
    # cuts the end of the answer and TRL drops a row whose prompt alone fills max_length. keep_end is refused:
    # it cuts the head of the prompt (a problem statement), lets a DPO pair see two different prompts, and
    # goes away in TRL 2.
    truncation_mode: str = "keep_start"
    gradient_checkpointing: bool = True
    assistant_only_loss: bool = True
    seed: int = 42
    # DPO
    beta: float = 0.1
    # accelerants: auto | true | false (true falls back, with the reason logged, when unavailable)
    packing: str | bool = "auto"
    liger: str | bool = "auto"
    optim: str = "auto"  # auto: paged_adamw_8bit on CUDA, adamw_torch elsewhere
    bf16: str | bool = "auto"
    attn_implementation: str = "auto"  # auto: flash_attention_2 when installed on CUDA, else sdpa
    # bookkeeping
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int = 2
    # A checkpoint also every N minutes of training (0: off): a hard kill (no SIGTERM) loses at most that.
    save_minutes: float = 30.0
    # validation: a held-out split chosen by a hash of each row's content (stable across re-runs)
    eval_fraction: float = 0.02  # of the rows; 0: no validation
    eval_max_rows: int = 500  # cap on held-out rows (datasets under 10 rows hold none out)
    eval_steps: int = 200  # eval loss every N optimizer steps, and at the end
    keep: str = "best"  # best: adapter/ is the lowest-eval-loss one | last: the final weights
    extra: dict = field(default_factory=dict)  # free-form notes carried into metrics.json

    @property
    def spec(self) -> StageSpec:
        return stage_spec(self.stage)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value):
    """YAML/--set values to the field's type (a string '3' for an int field, 'true' for a bool, ...)."""
    if key not in FIELDS:
        close = [k for k in FIELDS if k.split("_")[0] == key.split("_")[0]]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise TrainInputError(f"unknown config key '{key}'{hint}")
    default = FIELDS[key].default
    if isinstance(default, bool) and not isinstance(value, bool):
        raise TrainInputError(f"config key '{key}' must be true or false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, str):
            # YAML 1.1 reads `5e-6` (no dot) as a string: a hand-written config must not fail on it
            try:
                value = float(value.strip())
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainInputError(f"config key '{key}' must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and key != "stage":
            if float(value) != int(value):
                raise TrainInputError(f"config key '{key}' must be an integer, got {value!r}")
            return int(value)
        return type(default)(value)
    if value is None and default not in ("", None):
        raise TrainInputError(f"config key '{key}' cannot be null")
    return value


def _load_yaml(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise TrainInputError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise TrainInputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TrainInputError(f"{path}: expected a mapping of config keys")
    return data


def _parse_set(item: str) -> tuple[str, object]:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise TrainInputError(f"--set {item!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="Train one amigo stage (SFT 1-4, DPO 5).")
    p.add_argument("--stage", required=True, help="1-5 or a stage name (nl2code, context, debugging, ...)")
    p.add_argument("--config", help="YAML of config keys (train/configs/stageN.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--model", help="base model: hub id or local dir")
    p.add_argument("--method", choices=["auto", "lora", "qlora"], help="auto: --adapter-from's method, else lora")
    p.add_argument("--data", help="dataset: .jsonl/.parquet path or hub id")
    p.add_argument("--adapter-from", help="previous stage's adapter dir")
    p.add_argument("--from-base", action="store_true", default=None, help="stage > 1: fresh adapter on the base")
    p.add_argument("--output-dir", help="adapter/, checkpoints/, metrics.json, train.log, tb/")
    p.add_argument("--resume", help="auto (newest complete checkpoint, local then store) | never | DIR")
    p.add_argument("--max-runtime-s", type=float, help="stop at a step boundary after S seconds, save, exit 3")
    return p


def parse(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line usage error
        if e.code in (0, None):
            raise
        raise TrainInputError("invalid arguments (see usage above)") from None
    try:
        spec = stage_spec(args.stage)
    except ValueError as e:
        raise TrainInputError(str(e)) from None

    values: dict = {}
    if args.config:
        values.update(_load_yaml(args.config))
    values.update(dict(_parse_set(s) for s in args.set))
    flags = {
        "model": args.model, "method": args.method, "data": args.data, "adapter_from": args.adapter_from,
        "from_base": args.from_base, "output_dir": args.output_dir, "resume": args.resume,
        "max_runtime_s": args.max_runtime_s,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    values.pop("stage", None)  # the stage comes from --stage only
    tm = values.get("lora_target_modules")
    if isinstance(tm, str) and tm != "all-linear":  # "q_proj,v_proj" from --set: a list (a str is a regex to PEFT)
        values["lora_target_modules"] = [m.strip() for m in tm.split(",") if m.strip()]
    cfg = TrainConfig(stage=spec.number, **{k: _coerce(k, v) for k, v in values.items()})
    return check(cfg)


def check(cfg: TrainConfig) -> TrainConfig:
    """Cross-field checks that need no heavy imports (the dataset is validated in data.py)."""
    if cfg.method not in ("auto", "lora", "qlora"):
        raise TrainInputError(f"method must be auto, lora or qlora, got {cfg.method!r}")
    if not cfg.model:
        raise TrainInputError("no base model: pass --model or set model in the config")
    if not cfg.data:
        raise TrainInputError("no dataset: pass --data or set data in the config")
    if cfg.stage > 1 and not cfg.adapter_from and not cfg.from_base:
        raise TrainInputError(
            f"stage {cfg.stage} continues from the previous stage's adapter: pass --adapter-from DIR "
            "(or --from-base to start a fresh adapter on the base model)"
        )
    if cfg.model.startswith(("/", "./", "../", "~")) and not Path(cfg.model).expanduser().is_dir():
        raise TrainInputError(f"{cfg.model}: no such model dir")
    if cfg.adapter_from:
        if not (Path(cfg.adapter_from) / "adapter_config.json").is_file():
            raise TrainInputError(f"{cfg.adapter_from}: not a PEFT adapter dir (no adapter_config.json)")
    from train.preflight import chain_method

    cfg.method = chain_method(cfg.method, cfg.adapter_from)  # one method for the whole chain of adapters
    if cfg.resume not in ("auto", "never") and not Path(cfg.resume).is_dir():
        raise TrainInputError(f"--resume {cfg.resume}: no such checkpoint dir")
    if cfg.truncation_mode != "keep_start":
        raise TrainInputError(
            f"truncation_mode must be keep_start, got {cfg.truncation_mode!r} (keep_end cuts the head of the "
            "prompt, gives a DPO pair two different prompts, and goes away in TRL 2)"
        )
    if not 0 <= cfg.eval_fraction < 1:
        raise TrainInputError(f"eval_fraction must be >= 0 and < 1, got {cfg.eval_fraction}")
    if cfg.eval_max_rows < 0 or cfg.eval_steps < 1 or cfg.save_minutes < 0:
        raise TrainInputError("eval_max_rows and save_minutes must be >= 0, eval_steps >= 1")
    if cfg.keep not in ("best", "last"):
        raise TrainInputError(f"keep must be best or last, got {cfg.keep!r}")
    if cfg.report_to not in ("none", "tensorboard", "wandb"):
        raise TrainInputError(f"report_to must be none, tensorboard or wandb, got {cfg.report_to!r}")
    if cfg.max_runtime_s < 0:
        raise TrainInputError("--max-runtime-s must be >= 0")
    for key in ("packing", "liger", "bf16"):
        if str(getattr(cfg, key)).lower() not in ("auto", "true", "false"):
            raise TrainInputError(f"{key} must be auto, true or false, got {getattr(cfg, key)!r}")
    return cfg
