"""The plan's machine is what SkyPilot rents: for each stage of the shipped amigo.toml and each cloud target,
the task `launch` builds (planned accelerator, count, pinned instance where a name is ambiguous) goes
through SkyPilot's real optimizer, offline, over catalogs made of the shipped real catalog rows."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

from amigo_burst.config import load_config
from amigo_burst.lifecycle.dryrun import planned_task
from amigo_burst.planning.pricing import DATA
from amigo_burst.runners.sky_optimizer import optimize_offline
from tests.sky_fixtures import CATALOG_VERSION, point_sky_at

ROOT = Path(__file__).resolve().parents[1]
DISPLAY = {"runpod": "RunPod", "vast": "Vast", "lambda": "Lambda"}


@pytest.fixture
def real_catalog_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """HOME with ~/.sky/catalogs/v8/<cloud>/vms.csv = the shipped snapshot rows (real catalog rows)."""
    home = tmp_path / "home"
    root = home / ".sky" / "catalogs" / CATALOG_VERSION
    clouds_of: dict[str, set[str]] = {}
    for cloud in DISPLAY:
        (root / cloud).mkdir(parents=True)
        text = (DATA / f"catalog_{cloud}.csv").read_text()
        (root / cloud / "vms.csv").write_text(text)
        for r in csv.DictReader(text.splitlines()):
            clouds_of.setdefault(r["AcceleratorName"], set()).add(DISPLAY[cloud])
    (root / "common").mkdir()
    with open(root / "common" / "accelerators.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["AcceleratorName", "Clouds"])
        for name, clouds in sorted({**clouds_of, "RTX4050": set()}.items()):
            w.writerow([name, ", ".join(sorted(clouds))])
    imported = "sky.catalog.common" in sys.modules
    natural = Path(os.environ.get("HOME", "~")).expanduser() / ".sky" / "catalogs" / CATALOG_VERSION
    monkeypatch.setenv("HOME", str(home))
    from sky.catalog import common

    old_dir = common._ABSOLUTE_VERSIONED_CATALOG_DIR if imported else str(natural)
    point_sky_at(root)
    yield home
    point_sky_at(old_dir)


def _instance_gpus(cloud: str, instance_type: str) -> tuple[str, int]:
    with open(DATA / f"catalog_{cloud}.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["InstanceType"] == instance_type)
    return row["AcceleratorName"], int(float(row["AcceleratorCount"]))


@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("target", ["vast", "runpod", "lambda"])
def test_skypilot_rents_the_planned_gpu_and_count(stage, target, real_catalog_home):
    cfg = load_config(ROOT / "amigo.toml")
    task, cell = planned_task(cfg, stage, target)
    choice = optimize_offline(task)
    assert choice["cloud"] == cell.option.cloud
    assert _instance_gpus(choice["cloud"], choice["instance_type"]) == (cell.accelerator, cell.gpu_count)
    assert choice["usd_per_hour"] == pytest.approx(cell.usd_per_hour)
    if cell.option.pin_instance:  # e.g. Vast's A100 is 40 or 80 GB: the plan's card, not the cheaper twin
        assert choice["instance_type"] == cell.option.instance_type


def test_a_deadline_plans_several_gpus_and_skypilot_rents_them(real_catalog_home, tmp_path):
    text = (ROOT / "amigo.toml").read_text().replace("learning_rate = 2e-4\n", "learning_rate = 2e-4\nmax_hours = 4\n",
                                                      1)
    (tmp_path / "amigo.toml").write_text(text)
    cfg = load_config(tmp_path / "amigo.toml")
    task, cell = planned_task(cfg, 1, "runpod")
    assert cell.gpu_count > 1 and cell.hours <= 4, (cell.gpu_label, cell.hours)
    choice = optimize_offline(task)
    assert _instance_gpus("runpod", choice["instance_type"]) == (cell.accelerator, cell.gpu_count)
    # the trainer is told the plan's per-GPU micro-batch and accumulation; run.sh starts torchrun on the count
    sets = task.envs["AMIGO_SET"]
    assert f"per_device_train_batch_size={cell.micro_batch}" in sets
    assert f"gradient_accumulation_steps={cell.grad_accum}" in sets
    assert cell.micro_batch * cell.grad_accum * cell.gpu_count >= 16


def test_vast_a100_80gb_is_pinned_to_its_instance(real_catalog_home):
    """Vast's catalog names both the 40 and the 80 GB card "A100": without the pin SkyPilot would rent
    the cheaper 40 GB one."""
    from amigo_burst.runners import sky as sky_runner

    bare = optimize_offline(sky_runner.build_task(ROOT / "sky" / "vast.yaml", {}, {}, workdir=ROOT, gpu="A100:1"))
    pinned = optimize_offline(sky_runner.build_task(ROOT / "sky" / "vast.yaml", {}, {}, workdir=ROOT,
                                                    gpu="A100:1@1x-A100_PCIE-32-65536"))
    assert (bare["instance_type"], bare["usd_per_hour"]) == ("1x-A100_SXM4-32-65536", 0.76)
    assert (pinned["instance_type"], pinned["usd_per_hour"]) == ("1x-A100_PCIE-32-65536", 0.87)


def _cli(home: Path, *args: str, config: Path = ROOT / "amigo.toml"):
    import subprocess

    env = {**os.environ, "HOME": str(home), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "", "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "amigo_burst.cli", "--config", str(config), *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=home)


@pytest.mark.badinput
def test_plan_cloud_offline_without_catalogs_is_one_line(tmp_path):
    """Issue 15 item 5: SkyPilot has no catalog and no network -> one line and exit 2, not 13 lines of
    chained tracebacks. (A subprocess: SkyPilot fixes its catalog folder from HOME at import.)"""
    r = _cli(tmp_path, "plan", "--cloud", "runpod", "--stages", "2")
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert "could not fetch" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.badinput
def test_an_unknown_target_in_amigo_toml_fails_config_check(tmp_path):
    """Issue 15 item 10: `[targets] cloud = "gcp"` is refused when the config loads (config check, plan),
    naming the file, the key and the targets there are -- never a substitute target."""
    bad = tmp_path / "amigo.toml"
    bad.write_text((ROOT / "amigo.toml").read_text().replace('cloud = "vast"', 'cloud = "gcp"', 1))
    for args in (("config", "check"), ("plan",)):
        r = _cli(tmp_path, *args, config=bad)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
        assert "[targets] cloud = 'gcp': unknown target 'gcp'" in lines[0] and "vast" in lines[0]
    stage = tmp_path / "stage.toml"
    stage.write_text((ROOT / "amigo.toml").read_text().replace('target = "local"', 'target = "locla"', 1))
    r = _cli(tmp_path, "config", "check", config=stage)
    assert r.returncode == 2 and "[stages.1] target = 'locla'" in r.stderr
