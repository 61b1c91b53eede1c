"""`amigo-burst probe` and `launch --probe` on the local target: real training of the tiny model for a few
steps, measured, stored as calibration, the stage re-estimated (the Slurm version: test_probe_e2e.py)."""

from __future__ import annotations

import json

import pytest

from amigo_burst import planner
from amigo_burst.config import load_config
from amigo_burst.lifecycle.probe import JSON_KEYS, steady_tokens_per_s
from tests.helpers import cli, make_project, runs_of

pytestmark = pytest.mark.slow


def test_steady_speed_is_tokens_per_step_over_the_median_step():
    m = {"steps_this_run": 4, "tokens_seen": 2048, "median_step_s": 0.5, "tokens_per_s": 700.0}
    assert steady_tokens_per_s(m) == 1024.0  # 512 tokens a step, half a second each (warm-up left out)
    assert steady_tokens_per_s({"tokens_per_s": 700.0}) is None  # a wall-clock rate is not a step rate


def test_probe_measures_calibrates_and_reestimates(tiny_model, tmp_path):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "probe", "--stage", "1", "--cloud", "local", "--steps", "3", "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert tuple(d) == JSON_KEYS
    assert d["target"] == "local-rtx4050" and d["gpu"] == "cpu" and d["gpu_count"] == 1 and d["method"] == "lora"
    assert d["measured_tokens_per_s"] > 0 and d["est_tokens_per_s"] > 0 and d["measured_peak_vram_gib"] is None
    # the record is a finished probe: it calibrates, and it is never the stage's run
    (run,) = runs_of(project)
    assert run.status == "SUCCEEDED" and run.artifacts.get("probe") is True
    assert run.metrics["steps_this_run"] == 3 and run.tokens_per_s == pytest.approx(d["measured_tokens_per_s"], rel=0.01)
    from tests.helpers import records

    assert records(project).latest(1) is None
    cfg = load_config(project / "amigo.toml")
    cell = planner.estimate_for_target(cfg, 1, "local-rtx4050", run.estimate["tokens"])
    assert cell.estimate.calibration == "calibrated from 1 run"
    assert cell.estimate.tokens_per_s == pytest.approx(d["measured_tokens_per_s"], rel=0.01)
    # projected: the stage's tokens at the measured speed, plus its other parts (the local start-up, the
    # checkpoints, validation, the benchmark), at electricity's price
    e = cell.estimate
    assert e.parts["training"] == pytest.approx(e.tokens / d["measured_tokens_per_s"] / 3600, rel=0.02)
    assert d["projected_hours"] == pytest.approx(sum(e.parts.values()), rel=0.01)
    assert d["projected_hours"] == pytest.approx(cell.hours, rel=0.01)
    assert d["projected_usd"] == pytest.approx(cell.hours * cell.usd_per_hour, rel=0.02)


@pytest.mark.badinput
def test_launch_probe_refuses_without_a_terminal_when_over_budget(tiny_model, tmp_path):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "launch", "--stage", "1", "--cloud", "local", "--probe", "--max-usd", "0.0000001", timeout=600)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(err) == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "re-estimated at" in err[0] and "over the $1e-07 budget: not launched" in err[0]
    runs = runs_of(project)
    assert [x.artifacts.get("probe") for x in runs] == [True]  # the probe ran; the stage did not


def test_launch_probe_goes_on_within_the_budget(tiny_model, tmp_path):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "launch", "--stage", "1", "--cloud", "local", "--probe", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "probe:" in r.stdout and "re-estimated at" in r.stdout
    probe_run, real = runs_of(project)
    assert probe_run.artifacts.get("probe") and not real.artifacts.get("probe") and real.status == "SUCCEEDED"
    assert real.estimate["calibration"] == "calibrated from 1 run"  # the run's own estimate used the probe


def _long_rows(path, n: int = 120) -> None:
    """Stage-4-shaped rows: a problem, a long worked reasoning, an answer (~1,500 tokens each here)."""
    import random

    rnd = random.Random(0)
    words = "def return value index range while print list dict the of and a to is in so then".split()
    with path.open("w") as f:
        for i in range(n):
            text = " ".join(rnd.choice(words) for _ in range(900))
            f.write(json.dumps({"problem": f"problem {i}: " + text[:400], "reasoning": text,
                                "answer": f"def f{i}(x):\n    return x + {i}"}) + "\n")


def test_a_stage_4_probe_stopped_by_its_cap_keeps_its_measurement_and_reestimates(tiny_model, tmp_path):
    """Long rows, slow steps (AMIGO_FAULT_STEP_DELAY_S: 3 s after each step), a 20 s cap: the probe stops
    after a few of its 10 steps, STOPPED, and its timed steps still calibrate the stage's re-estimate. It
    prepared only the rows its steps need, held none out, and ran no benchmark. The local target: no paid
    API is involved (the cloud path is the same launch; tests/test_probe_e2e.py runs it on Slurm)."""
    project = make_project(tmp_path / "p", tiny_model, eval_limit=3)
    _long_rows(tmp_path / "long.jsonl")
    text = (project / "amigo.toml").read_text()
    text = text.replace(f'{{ path = "{planner.REPO_ROOT}/train/samples/stage4.jsonl" }}',
                        f'{{ path = "{tmp_path / "long.jsonl"}" }}')
    head, _, tail = text.partition("[stages.4]")
    tail = tail.replace("max_seq_len = 512", "max_seq_len = 2048", 1).replace("micro_batch = 4", "micro_batch = 2", 1)
    tail = tail.replace("grad_accum = 1", "grad_accum = 2", 1).replace("max_steps = 8\n", "", 1)  # the whole stage
    (project / "amigo.toml").write_text(head + "[stages.4]" + tail)
    r = cli(project, "probe", "--stage", "4", "--steps", "10", "--max-seconds", "20", "--json",
            env={"AMIGO_FAULT_STEP_DELAY_S": "3"}, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert tuple(d) == JSON_KEYS
    # its own time and cost were shown before it started, and its cap was the one asked for
    assert "probe: 10 steps of" in r.stderr and "stopped after 20 s of training at most" in r.stderr
    assert d["cap_s"] == 20 and d["probe_hours"] > 0
    assert d["status"] == "STOPPED" and 1 <= d["steps_run"] < 10 and d["measured_tokens_per_s"] > 0
    (run,) = runs_of(project)
    assert run.status == "STOPPED" and run.artifacts.get("probe") is True
    assert run.tokens_per_s == pytest.approx(d["measured_tokens_per_s"], rel=0.01)
    # only the rows its steps need: 10 steps x micro-batch 2 x accumulation 2; none held out, no benchmark
    assert run.artifacts["dataset"]["used"] == 40 and run.metrics["eval_rows"] == 0
    assert "humaneval" not in run.metrics and run.metrics["exit_reason"] == "budget"
    # the stage re-estimated from the kept measurement: calibrated by this one probe, for all 120 rows
    cfg = load_config(project / "amigo.toml")
    cell = planner.estimate_for_target(cfg, 4, "local-rtx4050", run.estimate["tokens"])
    assert cell.estimate.calibration == "calibrated from 1 run"
    assert cell.estimate.tokens_per_s == pytest.approx(d["measured_tokens_per_s"], rel=0.01)
    assert d["projected_hours"] == pytest.approx(cell.hours, rel=0.01)
    # the estimate is the whole stage's 120 rows (tokens per row of the probe's 40 x 120), not the probe's
    assert run.estimate["tokens"] == pytest.approx(run.artifacts["dataset"]["tokens"] * 3, rel=0.01)


def test_the_probe_cap_follows_the_estimated_step_time_of_the_shipped_stage_4(tmp_path):
    """The shipped stage 4 on its planned machine: a step is minutes by the plan's own numbers, so the cap
    of a 20-step probe is over an hour, not the 1,200 s that stopped it after ~10 steps."""
    from amigo_burst.lifecycle.probe import ProbeOptions, probe_estimate
    from amigo_burst.targets import get_target

    (tmp_path / "amigo.toml").write_text((planner.REPO_ROOT / "amigo.toml").read_text())
    cfg = load_config(tmp_path / "amigo.toml")
    p = probe_estimate(cfg, ProbeOptions(stage=4, steps=20), get_target("vast", cfg.root))
    assert p["step_s"] > 60 and p["cap_s"] >= 2 * 20 * p["step_s"] > 1200
    s = p["seconds"]
    assert p["total_s"] == pytest.approx(sum(s.values())) and s["steps"] == pytest.approx(20 * p["step_s"])
    c = p["cell"]
    assert p["rows"] == 20 * c.micro_batch * c.grad_accum * c.gpu_count
    stage_inputs = c.estimate.parts["inputs"] * 3600
    assert 0 < s["inputs"] < stage_inputs / 100  # 320 of 50,000 rows: its share of stage 4's ~10 GB prepare
    assert p["usd"] == pytest.approx(p["total_s"] / 3600 * c.usd_per_hour)
