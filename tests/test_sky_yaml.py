"""Every sky/*.yaml: a valid SkyPilot task, identical to the others outside `name` and `resources`,
naming accelerators the way its cloud's catalog does (RunPod A100-80GB, Lambda A100, Vast RTX4090)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.sky_fixtures import CATALOG_ROWS

SKY = Path(__file__).resolve().parents[1] / "sky"
YAMLS = sorted(SKY.glob("*.yaml"))
PER_TARGET = {"name", "resources"}


def _load(p: Path) -> dict:
    return yaml.safe_load(p.read_text(encoding="utf-8"))


def test_there_is_a_yaml_per_cloud():
    infras = {(_load(p).get("resources") or {}).get("infra") for p in YAMLS}
    assert {"runpod", "vast", "lambda", "slurm"} <= infras


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_parses_with_skypilot(path: Path, sky_catalog_home, monkeypatch):
    import sky

    monkeypatch.chdir(SKY.parent)  # `workdir: .` is the repo root when run by hand
    task = sky.Task.from_yaml(str(path))
    assert task.name == _load(path)["name"]
    assert task.run.strip() == "bash train/capped.sh run bash train/run.sh"  # under the hard cap
    assert set(task.envs) == set(_load(path)["envs"])


@pytest.mark.parametrize("path", YAMLS[1:], ids=lambda p: p.name)
def test_identical_outside_name_and_resources(path: Path):
    first = {k: v for k, v in _load(YAMLS[0]).items() if k not in PER_TARGET}
    this = {k: v for k, v in _load(path).items() if k not in PER_TARGET}
    assert this == first, f"{path.name} differs from {YAMLS[0].name} outside name/resources"


def _cloud_yamls() -> list[Path]:
    return [p for p in YAMLS if (_load(p).get("resources") or {}).get("infra") in CATALOG_ROWS]


@pytest.mark.parametrize("path", _cloud_yamls(), ids=lambda p: p.name)
def test_accelerator_is_in_its_clouds_catalog(path: Path, sky_catalog_home):
    """The name must be the cloud's own: SkyPilot's catalog lookup for that cloud finds it."""
    from sky import catalog

    res = _load(path)["resources"]
    cloud = res["infra"]
    name, _, count = str(res["accelerators"]).partition(":")
    offers = catalog.list_accelerators(gpus_only=True, clouds=cloud, case_sensitive=True)
    assert name in offers, f"{path.name}: {name!r} is not a {cloud} accelerator ({sorted(offers)})"
    assert int(count or 1) in {o.accelerator_count for o in offers[name]}
    # the test catalogs really are per cloud: another cloud's spelling is not found here
    other = {"runpod": "A100", "lambda": "RTX4090", "vast": "A100-80GB"}[cloud]
    assert other not in offers
