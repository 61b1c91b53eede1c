"""The record of a passed rehearsal, and the warning before a paid cloud without one.

Kept apart from rehearse.py (which launches stages): `launch` and `pipeline` read it after their
preflight, and rehearse.py writes it, without an import circle.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from amigo_burst.clouds import PRICED
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.state import paths
from amigo_burst.targets import get_target

COMMAND = "amigo-burst rehearse"


def rehearsal_dir(root: Path) -> Path:
    return paths.state_dir(root) / "rehearsal"


def code_digest(root: Path, patterns: tuple[str, ...]) -> str:
    """sha256 over the files under ROOT matching PATTERNS (relative path + content), caches excluded."""
    from train.storage import ALWAYS_EXCLUDE

    h = hashlib.sha256()
    for p in sorted(q for pat in patterns for q in root.rglob(pat) if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(part, ex) for part in rel.split("/") for ex in ALWAYS_EXCLUDE):
            continue
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def config_hash(cfg: AmigoConfig, train_dir: Path | None = None) -> str:
    """What training depends on: model, LoRA, every stage's data source and hyperparameters, the training
    code (train/) and the task YAML of every target the stages run on. Not budgets or target choice
    (those change where and how long, not whether it runs)."""
    from amigo_burst.targets import REPO_ROOT

    stages = {str(n): s.model_dump(mode="json", exclude={"target", "max_usd", "max_hours"})
              for n, s in sorted(cfg.stages.items())}
    names = {s.target or cfg.targets.cloud for s in cfg.stages.values()}
    yamls = {}
    for name in sorted(names):
        try:
            yamls[name] = hashlib.sha256(get_target(name, cfg.root).path.read_bytes()).hexdigest()
        except (UserError, OSError):
            yamls[name] = None
    doc = {"model": cfg.model.model_dump(mode="json"), "lora": cfg.lora.model_dump(mode="json"), "stages": stages,
           "train": code_digest(train_dir or REPO_ROOT / "train", ("*.py", "*.sh", "*.yaml", "*.txt")),
           "sky": yamls}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def passed_record(cfg: AmigoConfig) -> dict | None:
    """The recorded rehearsal that passed for this exact config, or None."""
    p = rehearsal_dir(cfg.root) / "rehearsal.json"
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("passed") and rec.get("config_hash") == config_hash(cfg) else None


def unrehearsed_warning(cfg: AmigoConfig, target_names: list[str]) -> str | None:
    """The warning `launch`/`pipeline` print before paying for a cloud with no passed rehearsal."""
    paid = sorted({t.infra for t in (get_target(n, cfg.root) for n in target_names) if t.infra in PRICED})
    if not paid or passed_record(cfg) is not None:
        return None
    return (f"no rehearsal passed for this amigo.toml (config {config_hash(cfg)}) before paying for "
            f"{', '.join(paid)}: `{COMMAND}` runs every stage on a tiny stand-in here in a few minutes")


def warn_unrehearsed(cfg: AmigoConfig, target_names: list[str], console) -> None:
    """Print the warning (yellow) when there is one."""
    from rich.markup import escape

    warning = unrehearsed_warning(cfg, target_names)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
