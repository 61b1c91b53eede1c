"""Stage 0: the base model's HumanEval score, computed once per project and benchmark settings.

    eval_key(cfg, method)        the settings key runs are matched by (planning/benchmark.settings_key)
    baselines(cfg)               every base score recorded: beside a stage's (metrics["humaneval_base"],
                                 train/humaneval.py --baseline) and by `eval --stage 0` (.amigo/evals/)
    baseline_envs(cfg, method)   AMIGO_EVAL_KEY, and AMIGO_EVAL_BASELINE when no complete base score with
                                 that key exists yet: the stage's job then scores the base too, on the same
                                 machine, problems, template and decoding (the adapter disabled)
"""

from __future__ import annotations

import json

from amigo_burst.config import AmigoConfig
from amigo_burst.planning.benchmark import settings_key
from amigo_burst.planning.report import baselines_of
from amigo_burst.state import paths
from amigo_burst.state.records import open_records


def eval_key(cfg: AmigoConfig, method: str) -> str:
    return settings_key(cfg.model.base, cfg.eval.limit, cfg.eval.max_new_tokens, method)


def baselines(cfg: AmigoConfig) -> list[dict]:
    """Base scores, oldest first: the ones recorded with runs, then `eval --stage 0`'s."""
    from amigo_burst.planner import runs_as_dicts

    return baselines_of(runs_as_dicts(open_records(cfg.root).list())) + eval_baselines(cfg)


def eval_baselines(cfg: AmigoConfig) -> list[dict]:
    """`eval --stage 0`'s scores (.amigo/evals/*/metrics.json without an adapter), oldest first."""
    found = []
    evals = paths.state_dir(cfg.root) / "evals"
    for m in sorted(evals.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime) if evals.is_dir() else []:
        try:
            he = json.loads(m.read_text()).get("humaneval") or {}
        except (OSError, ValueError):
            continue
        if he.get("problems") and not he.get("adapter"):
            found.append(he)
    return found


def cached(cfg: AmigoConfig, key: str) -> dict | None:
    """The newest complete base score with this key."""
    fits = [b for b in baselines(cfg) if b.get("key") == key and not b.get("partial")]
    return fits[-1] if fits else None


def baseline_envs(cfg: AmigoConfig, method: str) -> dict[str, str]:
    key = eval_key(cfg, method)
    wanted = cfg.eval.limit != 0 and cached(cfg, key) is None
    return {"AMIGO_EVAL_KEY": key, "AMIGO_EVAL_BASELINE": key if wanted else ""}
