"""What the controller hands `python -m train` for a stage (launch.stage_envs / choose_method), parsed by
the entrypoint exactly as train/run.sh does it: the plan's batch runs, the validation knobs arrive, and a
continued adapter fixes the method of the chain."""

from __future__ import annotations

import json

import pytest

from amigo_burst import planner
from amigo_burst.config import load_config, parse_config
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.launch import choose_method, stage_envs
from tests.helpers import REPO
from train import config as train_config


def _runs(envs: dict[str, str], tmp_path) -> train_config.TrainConfig:
    """train/run.sh's argument list (YAML + --set overrides), parsed: the config that trains."""
    argv = ["--stage", envs["AMIGO_STAGE"], "--config", str(REPO / envs["AMIGO_TRAIN_CONFIG"]),
            "--model", str(tmp_path), "--data", "rows.jsonl", "--from-base", "--method", envs["AMIGO_METHOD"]]
    for kv in envs["AMIGO_SET"].split():
        argv += ["--set", kv]
    return train_config.parse(argv)


def test_auto_batch_runs_as_the_plan_estimated_it(tmp_path):
    """amigo.toml leaves micro_batch/grad_accum "auto": the plan cell's values train, not the YAML's."""
    cfg = load_config(REPO / "amigo.toml")
    differs = 0
    for n, sc in cfg.stages.items():
        assert sc.micro_batch == "auto" and sc.grad_accum == "auto"
        est = planner.estimate_for_target(cfg, n, "runpod")
        yaml_only = _runs(stage_envs(cfg, n, "r", est.method, 0), tmp_path)
        got = _runs(stage_envs(cfg, n, "r", est.method, 0, est), tmp_path)
        assert (got.per_device_train_batch_size, got.gradient_accumulation_steps) == (est.micro_batch, est.grad_accum)
        differs += (yaml_only.per_device_train_batch_size, yaml_only.gradient_accumulation_steps) != \
            (est.micro_batch, est.grad_accum)
    assert differs, "the YAMLs happen to equal the plan: this test would prove nothing"


def test_a_resumed_run_keeps_the_batch_it_started_with(tmp_path):
    """--resume reuses the stopped run's micro-batch x grad-accum (its record's estimate), not a new plan's."""
    from amigo_burst.lifecycle.launch import same_batch

    cfg = load_config(REPO / "amigo.toml")
    est = planner.estimate_for_target(cfg, 2, "runpod")
    first = {**est.to_record(), "micro_batch": est.micro_batch + 1, "grad_accum": est.grad_accum + 2}
    again = same_batch(first, est)
    got = _runs(stage_envs(cfg, 2, "r", again.method, 0, again), tmp_path)
    assert (got.per_device_train_batch_size, got.gradient_accumulation_steps) == \
        (est.micro_batch + 1, est.grad_accum + 2)
    assert same_batch({}, est) == est and same_batch(first, None) is None


def test_explicit_batch_wins_over_the_plan(tmp_path):
    cfg = load_config(REPO / "presets" / "demo.toml")
    est = planner.estimate_for_target(cfg, 1, "runpod")
    got = _runs(stage_envs(cfg, 1, "r", "lora", 0, est), tmp_path)
    assert (got.per_device_train_batch_size, got.gradient_accumulation_steps) == (4, 1)  # demo.toml's


def test_validation_and_checkpoint_knobs_reach_the_trainer(tmp_path):
    text = (REPO / "presets" / "demo.toml").read_text().replace(
        "[stages.2]\n", "[stages.2]\neval_fraction = 0.05\neval_max_rows = 7\neval_steps = 3\nkeep = \"last\"\n"
        "save_minutes = 2.5\n", 1)
    cfg = parse_config(text)
    got = _runs(stage_envs(cfg, 2, "r", "lora", 0), tmp_path)
    assert (got.eval_fraction, got.eval_max_rows, got.eval_steps, got.keep, got.save_minutes) == \
        (0.05, 7, 3, "last", 2.5)
    default = _runs(stage_envs(cfg, 1, "r", "lora", 0), tmp_path)  # defaults; max_steps 8: an eval half-way
    assert (default.eval_fraction, default.eval_max_rows, default.eval_steps, default.keep, default.save_minutes) \
        == (0.02, 500, 4, "best", 30.0)


def test_a_bad_keep_is_a_config_error():
    text = (REPO / "presets" / "demo.toml").read_text().replace("[stages.2]\n", "[stages.2]\nkeep = \"first\"\n", 1)
    with pytest.raises(UserError, match=r"stages\.2\.keep"):
        parse_config(text)


# --- one method for the chain (controller side) ---------------------------------------------------


def _adapter(tmp_path, method: str | None):
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    if method:
        (d / "amigo_adapter.json").write_text(json.dumps({"method": method}))
    return d


@pytest.mark.parametrize(("configured", "recorded", "plan", "expect"), [
    ("auto", "qlora", "lora", "qlora"),  # the chain's method over the plan's
    ("auto", "lora", "qlora", "lora"),
    ("qlora", "qlora", "lora", "qlora"),
    ("auto", None, "lora", "lora"),  # nothing recorded (stage 1, or an older adapter): the plan
    ("lora", None, "qlora", "lora"),
])
def test_choose_method_follows_the_previous_adapter(tmp_path, configured, recorded, plan, expect):
    cfg = load_config(REPO / "amigo.toml")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"method": configured})})
    est = planner.estimate_for_target(cfg, 2, "runpod")
    import dataclasses

    est = dataclasses.replace(est, method=plan)
    assert choose_method(cfg, est, _adapter(tmp_path, recorded)) == expect


def test_an_explicit_method_against_the_chain_is_refused(tmp_path):
    cfg = load_config(REPO / "amigo.toml")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"method": "lora"})})
    with pytest.raises(UserError) as e:
        choose_method(cfg, None, _adapter(tmp_path, "qlora"))
    msg = str(e.value)
    assert "\n" not in msg and 'method = "lora"' in msg and "trained with qlora" in msg and "--from-base" in msg
