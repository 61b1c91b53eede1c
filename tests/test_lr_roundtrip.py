"""Every number amigo.toml gives a stage reaches the trainer unchanged (issue 12: `5e-06` was a string).

The controller renders the stage's settings as `--set key=value` (launch.stage_envs -> AMIGO_SET ->
train/run.sh -> `python -m train --set ...`), and the entrypoint parses them with YAML. These tests
take that path for real, minus the shell.
"""

from __future__ import annotations

import math

import pytest

from amigo_burst.config import load_config
from amigo_burst.lifecycle.launch import stage_envs, yaml_number
from tests.helpers import REPO
from train import config as train_config


def _parsed(envs: dict[str, str], tmp_path) -> train_config.TrainConfig:
    argv = ["--stage", envs["AMIGO_STAGE"], "--model", str(tmp_path), "--data", "rows.jsonl", "--from-base"]
    for kv in envs["AMIGO_SET"].split():  # run.sh: `for kv in ${AMIGO_SET:-}; do args+=(--set "$kv"); done`
        argv += ["--set", kv]
    return train_config.parse(argv)


@pytest.mark.parametrize("toml", ["amigo.toml", "presets/demo.toml"])
def test_every_stage_setting_of_the_shipped_configs_reaches_the_trainer(toml, tmp_path):
    cfg = load_config(REPO / toml)
    for n, sc in cfg.stages.items():
        got = _parsed(stage_envs(cfg, n, "r", "lora", 0), tmp_path)
        assert got.learning_rate == sc.learning_rate, (toml, n)
        assert got.num_train_epochs == sc.epochs and got.max_length == sc.max_seq_len
        assert got.lora_dropout == cfg.lora.dropout and got.lora_r == cfg.lora.r


@pytest.mark.parametrize("x", [5e-6, 1e-5, 2e-4, 3.3e-7, 1.5e-10, 0.1, 1e20, 123.456, 2.0, 1 / 3])
def test_yaml_number_round_trips_exactly(x):
    import yaml

    back = yaml.safe_load(yaml_number(x))
    assert isinstance(back, float) and back == x and not math.isnan(back)


def test_a_hand_written_yaml_lr_without_a_dot_is_a_number(tmp_path):
    """`learning_rate: 5e-6` in a train/configs YAML is a string to PyYAML; the entrypoint reads it as 5e-6."""
    y = tmp_path / "c.yaml"
    y.write_text("learning_rate: 5e-6\nbeta: 1e-1\n")
    got = train_config.parse(["--stage", "5", "--model", str(tmp_path), "--data", "d.jsonl", "--from-base",
                              "--config", str(y)])
    assert got.learning_rate == 5e-6 and got.beta == 0.1
