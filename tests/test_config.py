"""amigo.toml: every shipped config validates; every kind of mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from amigo_burst.config import load_config, parse_config
from amigo_burst.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "amigo.toml", *sorted((ROOT / "presets").glob("*.toml"))]
DEMO = (ROOT / "presets" / "demo.toml").read_text()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert sorted(cfg.stages) == [1, 2, 3, 4, 5]
    assert cfg.path == path.resolve()


def test_real_plan_is_12b_on_the_cloud_with_hub_datasets():
    cfg = load_config(ROOT / "amigo.toml")
    assert cfg.model.arch == "mistral-nemo-12b"
    # a 12B base does not fit the 6 GB laptop: every stage on [targets].cloud (rehearse refuses a plan that
    # puts one where a launch would be refused)
    assert all(st.target is None for st in cfg.stages.values()) and cfg.targets.cloud != "local"
    for n, st in cfg.stages.items():
        assert st.dataset.hub and st.dataset.columns, f"stage {n} names a hub dataset with a column map"


def test_demo_is_offline_and_local():
    cfg = load_config(ROOT / "presets" / "demo.toml")
    assert cfg.targets.cloud == "local" and cfg.targets.local == "local"
    for st in cfg.stages.values():
        assert st.dataset.path and cfg.resolve(st.dataset.path).name.startswith("stage")


@pytest.mark.badinput
@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda s: s.replace("[project]", "[project"), "TOML syntax error"),
        (lambda s: s.replace('name = "amigo-demo"', "name = 3"), "project.name"),
        (lambda s: s.replace("r = 8", "r = \"eight\""), "lora.r"),
        (lambda s: s.replace("[lora]", "[lora]\nrank = 4"), "lora.rank: unknown key"),
        (lambda s: s.replace('base = "tiny-model"', ""), "model.base: required field is missing"),
        (lambda s: s.replace("[stages.5]", "[stages.6]"), "stage keys must be 1-5"),
        (lambda s: s.replace('url = "file://.amigo/store"', 'url = "ftp://x"'), "unknown store scheme"),
        (lambda s: s.replace("micro_batch = 4", "micro_batch = 0", 1), "micro_batch"),
        (lambda s: s.replace('dataset = { path = "../train/samples/stage1.jsonl" }',
                             'dataset = { path = "a", hub = "b" }'), "exactly one of 'path' or 'hub'"),
    ],
)
def test_bad_config_is_one_line(mutate, expect):
    with pytest.raises(UserError) as e:
        parse_config(mutate(DEMO), "amigo.toml")
    msg = str(e.value)
    assert expect in msg and "\n" not in msg and msg.startswith("amigo.toml")


@pytest.mark.badinput
def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.badinput
def test_non_utf8_config(tmp_path):
    p = tmp_path / "amigo.toml"
    p.write_bytes(b"\xff\xfe[project]\n")
    with pytest.raises(UserError, match="cannot read"):
        load_config(p)
