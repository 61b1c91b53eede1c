"""Offline dry-runs: our YAMLs -> build_task -> SkyPilot's real optimizer over catalogs the test wrote.

No API server, no network, no credentials (runners/sky.optimize_offline says why that is sound).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amigo_burst.errors import UserError
from amigo_burst.runners import sky as sky_runner
from amigo_burst.runners import sky_jobs
from amigo_burst.runners.sky_optimizer import optimize_offline

SKY = Path(__file__).resolve().parents[1] / "sky"
FAKE = "hf_FAKE_SECRET_1234567890abcdef"


def _cheapest(rows: list[dict], accelerator: str, count: int = 1) -> dict:
    offers = [r for r in rows if r["AcceleratorName"] == accelerator and r["AcceleratorCount"] == count]
    return min(offers, key=lambda r: float(r["Price"]))


@pytest.mark.parametrize(
    ("yaml_name", "cloud", "accelerator"),
    [
        ("runpod.yaml", "runpod", "A100-80GB"),
        ("vast.yaml", "vast", "RTX4090"),
        ("lambda-a100.yaml", "lambda", "A100"),
    ],
)
def test_optimizer_picks_the_cheapest_offer(yaml_name, cloud, accelerator, sky_catalog_home, tmp_path):
    _home, rows = sky_catalog_home
    task = sky_runner.build_task(SKY / yaml_name, {"AMIGO_STAGE": "2"}, {}, workdir=tmp_path)
    plan = optimize_offline(task)
    row = _cheapest(rows[cloud], accelerator)
    assert plan["cloud"] == cloud
    assert plan["instance_type"] == row["InstanceType"]
    assert plan["region"] == row["Region"]
    assert plan["accelerator"] == f"{accelerator}:1"
    assert plan["usd_per_hour"] == pytest.approx(float(row["Price"]))


def test_gpu_override_keeps_the_count_and_reprices(sky_catalog_home, tmp_path):
    _home, rows = sky_catalog_home
    task = sky_runner.build_task(SKY / "runpod.yaml", {}, {}, workdir=tmp_path, gpu="H100-SXM")
    assert next(iter(task.resources)).accelerators == {"H100-SXM": 1}
    plan = optimize_offline(task)
    assert plan["usd_per_hour"] == pytest.approx(float(_cheapest(rows["runpod"], "H100-SXM")["Price"]))


@pytest.mark.badinput
@pytest.mark.parametrize(
    ("yaml_name", "gpu", "hint"),
    [("runpod.yaml", "A100", "(did you mean A100-80GB?)"), ("lambda-a100.yaml", "RTX4090", "")],
)
def test_another_clouds_accelerator_name_is_one_clear_error(yaml_name, gpu, hint, sky_catalog_home, tmp_path):
    """RunPod has no plain `A100` (its 80 GB card is `A100-80GB`); Lambda rents no RTX4090."""
    task = sky_runner.build_task(SKY / yaml_name, {}, {}, workdir=tmp_path, gpu=gpu)
    with pytest.raises(UserError) as e:
        optimize_offline(task)
    msg = str(e.value)
    assert "\n" not in msg and f"{gpu}:1{' ' + hint if hint else ''}:" in msg and "sky show-gpus" in msg


@pytest.mark.badinput
def test_invalid_field_names_the_file_and_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((SKY / "vast.yaml").read_text().replace("disk_size: 120", "disk_size: lots"))
    with pytest.raises(UserError) as e:
        sky_runner.build_task(bad, {}, {}, workdir=tmp_path)
    assert str(e.value).startswith(f"{bad}: resources.disk_size: ") and "\n" not in str(e.value)


@pytest.mark.badinput
def test_a_token_in_envs_is_refused(tmp_path):
    with pytest.raises(UserError, match="HF_TOKEN must be passed as a secret"):
        sky_runner.build_task(SKY / "vast.yaml", {"HF_TOKEN": FAKE}, {}, workdir=tmp_path)


def test_secrets_filled_but_never_in_a_printed_or_stored_yaml(sky_catalog_home, tmp_path):
    task = sky_runner.build_task(
        SKY / "runpod.yaml",
        {"AMIGO_RUN_ID": "s2-runpod-x"},
        {"HF_TOKEN": FAKE, "RUNPOD_API_KEY": "rp_KEY_42"},
        workdir=tmp_path,
    )
    # the value reaches SkyPilot as a secret (that is how the machine gets it) ...
    assert task.secrets["HF_TOKEN"].get_secret_value() == FAKE
    # ... only the secrets the YAML declares, and declared ones we lack are dropped, not left null
    assert set(task.secrets) == {"HF_TOKEN"}
    assert "managed_secrets" not in task.to_yaml_config()
    # ... and nothing we print or store carries it: our dump, SkyPilot's kept YAML text, envs
    printed = sky_runner.task_yaml(task)
    assert FAKE not in printed and "<redacted>" in printed and "rp_KEY_42" not in printed
    assert FAKE not in task.to_yaml_config(use_user_specified_yaml=True).__repr__()
    assert FAKE not in repr(task.envs) and task.envs["AMIGO_RUN_ID"] == "s2-runpod-x"
    assert task.workdir == str(tmp_path)


def test_optimize_offline_leaves_skypilots_cloud_check_alone(sky_catalog_home, tmp_path):
    import importlib

    check = importlib.import_module("sky.check")
    before = check.get_cached_enabled_clouds_or_refresh
    optimize_offline(sky_runner.build_task(SKY / "vast.yaml", {}, {}, workdir=tmp_path))
    assert check.get_cached_enabled_clouds_or_refresh is before


def test_line_writer_delivers_whole_lines_without_colours():
    lines: list[str] = []
    with sky_runner.LineWriter(lines.append) as out:
        print('(run, pid=7) AMIGO_PROGRESS {"step": ', end="", file=out, flush=True)
        print("1}\n\x1b[32mdone\x1b[0m\r\nlast, no newline", end="", file=out, flush=True)
        assert lines == ['(run, pid=7) AMIGO_PROGRESS {"step": 1}', "done"]
    assert lines[-1] == "last, no newline"


@pytest.mark.badinput
@pytest.mark.parametrize(
    ("yaml_name", "store", "why"),
    [("lambda-a100.yaml", "s3://b/p", "lambda has no spot"), ("runpod.yaml", "", "needs an s3:// store")],
)
def test_spot_refuses_what_cannot_recover(yaml_name, store, why, tmp_path):
    task = sky_runner.build_task(SKY / yaml_name, {"AMIGO_STORE_URI": store}, {}, workdir=tmp_path)
    with pytest.raises(UserError, match=why):
        sky_jobs.spot_launch(task, "amigo-s2-spot")


@pytest.mark.parametrize("cloud", ["runpod", "vast", "lambda"])
def test_plan_cloud_shows_the_optimizers_choice(cloud, sky_catalog_home):
    """`amigo-burst plan --cloud X --stages 2`: instance type, region and $/h from SkyPilot's optimizer,
    for the machine the plan chose on that target (priced from the same catalogs)."""
    import re

    from typer.testing import CliRunner

    from amigo_burst.cli.app import app

    _home, rows = sky_catalog_home
    cfg = Path(__file__).resolve().parents[1] / "amigo.toml"
    r = CliRunner().invoke(app, ["--config", str(cfg), "plan", "--cloud", cloud, "--stages", "2"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    accel, count = re.search(r"the plan chose (\S+):(\d+)", r.output).groups()
    row = _cheapest(rows[cloud], accel, int(count))
    assert row["InstanceType"] in r.output and row["Region"] in r.output
    assert f"${float(row['Price']):.3f}/h" in r.output and f"({accel}:{count})" in r.output
