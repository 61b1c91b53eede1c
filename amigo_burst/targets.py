"""The target registry: one SkyPilot task YAML per target in sky/.

Read with PyYAML only (no `import sky`): listing targets must stay instant.
A file named `local*.yaml` runs on this machine through the local runner; every
other file goes to SkyPilot. `--cloud NAME` accepts the file stem
(`lambda-a100`) or, when unique, its first word (`lambda`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amigo_burst.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    name: str  # file stem, e.g. "lambda-a100"
    path: Path
    infra: str  # "local", "runpod", "vast", "lambda", "slurm", ...
    accelerator: str | None  # SkyPilot catalog name for that cloud, e.g. "A100-80GB"
    gpu_count: int
    config: dict  # the parsed YAML

    @property
    def alias(self) -> str:
        return self.name.split("-")[0]

    @property
    def is_local(self) -> bool:
        return self.infra == "local"

    @property
    def price_source(self) -> str:
        if self.is_local:
            return "electricity (local_gpu power x $/kWh)"
        if self.infra in ("runpod", "vast", "lambda"):
            return f"SkyPilot {self.infra} catalog"
        return "none (your own cluster)"


def sky_dir(root: Path | None = None) -> Path:
    """sky/ of the project (next to amigo.toml) if it has one, else the one shipped with amigo-burst."""
    if root is not None and (root / "sky").is_dir():
        return root / "sky"
    return REPO_ROOT / "sky"


def _parse_accelerators(value: object, path: Path) -> tuple[str | None, int]:
    if value is None:
        return None, 0
    if isinstance(value, dict):  # {A100: 1} (a set of choices: first one describes the target)
        name, count = next(iter(value.items()))
        return str(name), int(count or 1)
    text = str(value)
    name, _, count = text.partition(":")
    try:
        return name.strip(), int(count) if count else 1
    except ValueError:
        raise UserError(f"{path}: resources.accelerators: bad count in {text!r}") from None


def load_target(path: Path) -> Target:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} YAML syntax error") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a SkyPilot task mapping")
    for key in ("resources", "envs", "setup", "run"):
        if key not in cfg:
            raise UserError(f"{path}: missing field '{key}'")
    res = cfg["resources"] or {}
    if not isinstance(res, dict):
        raise UserError(f"{path}: resources: expected a mapping")
    local = path.stem.startswith("local")
    infra = "local" if local else str(res.get("infra") or res.get("cloud") or "?").split("/")[0].lower()
    accel, count = _parse_accelerators(res.get("accelerators"), path)
    return Target(path.stem, path, infra, accel, count, cfg)


def all_targets(root: Path | None = None) -> list[Target]:
    return [load_target(p) for p in sorted(sky_dir(root).glob("*.yaml"))]


def get_target(name: str, root: Path | None = None) -> Target:
    targets = all_targets(root)
    exact = [t for t in targets if t.name == name]
    by_alias = [t for t in targets if t.alias == name]
    if exact:
        return exact[0]
    if len(by_alias) == 1:
        return by_alias[0]
    names = ", ".join(sorted({t.alias for t in targets} | {t.name for t in targets}))
    if len(by_alias) > 1:
        raise UserError(f"target '{name}' is ambiguous: {', '.join(t.name for t in by_alias)}")
    raise UserError(f"unknown target '{name}': choose one of {names}")


def check_config_targets(cfg) -> None:
    """Every target amigo.toml names ([targets] cloud/local, [stages.N] target) is a sky/*.yaml:
    a typo ("gcp") is an error when the config loads, not a substitute target at plan time."""
    named = [("[targets] cloud", cfg.targets.cloud), ("[targets] local", cfg.targets.local)]
    named += [(f"[stages.{n}] target", sc.target) for n, sc in sorted(cfg.stages.items()) if sc.target]
    for where, name in named:
        try:
            get_target(name, cfg.root)
        except UserError as e:
            raise UserError(f"{cfg.path or 'amigo.toml'}: {where} = {name!r}: {e}") from None
