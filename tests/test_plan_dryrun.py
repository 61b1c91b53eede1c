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
    stage.write_text((ROOT / "amigo.toml").read_text().replace("learning_rate = 2e-4\n", 'learning_rate = 2e-4\ntarget = "locla"\n', 1))
    r = _cli(tmp_path, "config", "check", config=stage)
    assert r.returncode == 2 and "[stages.1] target = 'locla'" in r.stderr


def test_fallbacks_keep_the_price_and_skypilot_rents_the_next_when_the_first_is_sold_out(real_catalog_home):
    """Issue 13: `launch` hands SkyPilot the plan's machine first, then machines that keep the plan's promises
    (`resources.ordered`). Where the planned card is sold out, SkyPilot's failover blocks it and re-optimizes
    (what its provisioner does): the next machine in the plan's order is rented, at the price the plan
    expected for it, and never a dearer machine outside the list."""
    from sky.optimizer import Optimizer
    from sky.utils import dag_utils

    import sky
    from amigo_burst import planner
    from amigo_burst.planning.matrix import FALLBACK_SLACK
    from amigo_burst.runners.sky_optimizer import _assume_enabled

    cfg = load_config(ROOT / "amigo.toml")
    task, cell = planned_task(cfg, 3, "runpod")  # the shipped plan: L40S, then A100-80GB within 25% and $15
    assert len(cell.fallbacks) >= 1, cell.launch_gpus
    assert isinstance(task.resources, list)  # ordered: the plan's choice first
    assert [f"{next(iter(r.accelerators))}:{next(iter(r.accelerators.values()))}" for r in task.resources] == \
        [g.partition("@")[0] for g in cell.launch_gpus]
    for f in cell.fallbacks:  # the same trainer settings fit, the stage costs at most 25% more, in budget
        assert (f.method, f.gpu_count) == (cell.method, cell.gpu_count) and f.micro_batch >= cell.micro_batch
        assert f.usd <= cell.usd * (1 + FALLBACK_SLACK) and f.usd <= planner.budget_for(cfg, 3).usd == 15
    assert optimize_offline(task)["usd_per_hour"] == pytest.approx(cell.usd_per_hour)  # the first, while there

    sold_out = [sky.Resources(infra="runpod", accelerators={cell.accelerator: cell.gpu_count})]
    with _assume_enabled(["runpod"]):
        dag = Optimizer.optimize(dag_utils.convert_entrypoint_to_dag(task), quiet=True, blocked_resources=sold_out)
    rented = dag.tasks[0].best_resources
    nxt = cell.fallbacks[0]
    assert _instance_gpus("runpod", rented.instance_type) == (nxt.accelerator, nxt.gpu_count)
    assert rented.get_cost(3600) == pytest.approx(nxt.usd_per_hour)
    # the runtime cap is computed at the dearest candidate's rate, so the budget holds whichever is rented
    assert cell.max_usd_per_hour == max(c.usd_per_hour for c in (cell, *cell.fallbacks))


def test_gpu_override_rents_exactly_that_machine(real_catalog_home):
    from amigo_burst import planner

    cfg = load_config(ROOT / "amigo.toml")
    cell = planner.estimate_for_target(cfg, 1, "runpod", gpu="L40S:1")
    assert cell.fallbacks == () and cell.launch_gpus == ["L40S:1"]


def test_the_rented_machine_is_recorded_with_its_price(real_catalog_home, tmp_path):
    """With fallbacks, SkyPilot may rent the second machine: the worker records what the launch handle says
    was rented (its catalog $/h), so status and report cost the run at that rate."""
    from types import SimpleNamespace

    import sky
    from amigo_burst.lifecycle.cloud_job import _rented_hook
    from amigo_burst.lifecycle.handoff import LaunchPlan
    from amigo_burst.runners.sky import rented_machine
    from amigo_burst.state.records import Run, open_records

    runs = open_records(tmp_path)
    runs.claim_stage(1, Run(id="s1-runpod-20261202-120000-ab12", stage=1, target="runpod", cluster="amigo-x",
                            status="RUNNING", usd_per_hour=0.99))
    plan = LaunchPlan("s1-runpod-20261202-120000-ab12", "amigo.toml", "runpod", "amigo-x", {}, str(tmp_path),
                      "rsync", False, False, ["L40S:1", "A100-80GB:1"])
    res = sky.Resources(infra="runpod", accelerators={"A100-80GB": 1})
    with open(DATA / "catalog_runpod.csv", newline="") as f:
        row = min((r for r in csv.DictReader(f) if r["AcceleratorName"] == "A100-80GB"
                   and int(float(r["AcceleratorCount"])) == 1), key=lambda r: float(r["Price"]))
    res = res.copy(instance_type=row["InstanceType"], region=row["Region"])
    machine = rented_machine(SimpleNamespace(launched_resources=res))
    assert machine["accelerator"] == "A100-80GB:1" and machine["usd_per_hour"] == pytest.approx(float(row["Price"]))
    said = []
    _rented_hook(runs, plan, said.append)(machine)
    assert runs.get(plan.run_id).usd_per_hour == pytest.approx(float(row["Price"]))
    assert said and "rented A100-80GB:1" in said[0]
    # one machine asked for: nothing to choose, nothing to record
    assert _rented_hook(runs, LaunchPlan(**{**plan.__dict__, "gpu": "L40S:1"}), said.append) is None
