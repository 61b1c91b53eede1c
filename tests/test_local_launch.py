"""The controller's whole loop on the local target: launch, logs, status, download, pipeline.

Real parts only: the `amigo-burst` CLI as a subprocess, a detached worker, real
TRL training of the tiny offline model, the file:// store, the SQLite state DB.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.helpers import cli, make_project, records, runs_of, wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_project(tmp_path_factory, tiny_model) -> Path:
    """One demo pipeline 1->5, shared by the tests that inspect its results."""
    project = make_project(tmp_path_factory.mktemp("pipe") / "proj", tiny_model)
    t0 = time.perf_counter()
    r = cli(project, "pipeline", "--plan", "local", check=True)
    (project / "pipeline.out").write_text(r.stdout + r.stderr + f"\nwall {time.perf_counter() - t0:.1f}s\n")
    return project


def test_pipeline_runs_five_stages_and_chains_adapters(pipeline_project):
    runs = runs_of(pipeline_project)
    assert [(r.stage, r.status) for r in runs] == [(n, "SUCCEEDED") for n in range(1, 6)]
    for prev, cur in zip(runs, runs[1:], strict=False):
        assert cur.artifacts.get("from_run") == prev.id, "stage N continues from stage N-1's adapter"
    for r in runs:
        d = pipeline_project / ".amigo" / "runs" / r.id
        m = json.loads((d / "metrics.json").read_text())
        assert m["stage"] == r.stage and m["steps"] > 0 and r.tokens_per_s and r.tokens_per_s > 0
        assert "AMIGO_PROGRESS" in (d / "train.log").read_text()


def test_every_adapter_loads_and_generates(pipeline_project, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    for r in runs_of(pipeline_project):
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        model = PeftModel.from_pretrained(base, pipeline_project / ".amigo" / "runs" / r.id / "adapter")
        ids = tok("def add(a, b):", return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=5, do_sample=False)
        assert out.shape[1] > ids["input_ids"].shape[1]


def test_rerun_skips_done_stages(pipeline_project):
    r = cli(pipeline_project, "pipeline", "--plan", "local", check=True)
    assert r.stdout.count("already done") == 5
    assert len(runs_of(pipeline_project)) == 5


def test_readme_examples_run_as_documented(pipeline_project, tmp_path):
    """Every `amigo-burst ...` example in README.md (tests/readme_examples.py reads them) runs in the demo
    project and exits as documented; the few that need a cloud or a cluster are checked as README_CLOUD
    says. A new example in README.md is picked up without touching this test."""
    from tests.readme_examples import check_examples

    checked = check_examples(pipeline_project, tmp_path)
    assert len(checked) >= 15, checked


def test_relaunch_with_unchanged_inputs_uploads_zero_bytes_and_prints_few_lines(pipeline_project):
    """A stage at 80 columns: the progress bar plus at most 8 lines and the result; the library noise
    (warnings, tokenizer passes, weight loading) stays in the run's log file only."""
    r = cli(pipeline_project, "launch", "--stage", "1", check=True, env={"COLUMNS": "80"})
    assert "store: 0 bytes uploaded" in r.stdout, r.stdout
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    run_id = re.search(r"run (s1-local-\S+) started", r.stdout).group(1)
    bar = [ln for ln in lines if ln.startswith("stage 1 ") and "8/8" in ln]
    assert len(bar) == 1 and lines[-1] == f"{run_id}: SUCCEEDED", lines
    assert len(lines) <= 1 + 8 + 1, "\n".join(lines)
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    log = (pipeline_project / ".amigo" / "runs" / run_id / "train.log").read_text().splitlines()
    from amigo_burst.lifecycle.follow import Display

    shown = Display()
    hidden = [ln for ln in log if ln.strip() and not ln.startswith("AMIGO_") and not shown.wanted(ln)]
    assert hidden, "the log file keeps what the terminal does not show"
    for ln in hidden:
        assert ln not in r.stdout, f"library noise reached the terminal: {ln}"


def test_status_and_logs_of_finished_runs(pipeline_project):
    r = cli(pipeline_project, "status", check=True)
    assert r.stdout.count("SUCCEEDED") >= 5
    run = runs_of(pipeline_project)[0]
    for args in (("logs", run.id), ("logs", run.id, "-f")):
        r = cli(pipeline_project, *args, check=True)
        assert "AMIGO_PROGRESS" not in r.stdout and "train" in r.stdout.lower()
        assert r.stdout.strip().splitlines()[-1] == f"{run.id}: SUCCEEDED", r.stdout[-500:]
    r = cli(pipeline_project, "logs", run.id[:-3], check=True)  # a unique prefix; no -f: step and loss too
    steps = [ln for ln in r.stdout.splitlines() if ln.startswith("stage 1  step ")]
    assert len(steps) == 8 and steps[-1].startswith("stage 1  step 8/8  loss "), r.stdout
    evals = [ln for ln in r.stdout.splitlines() if ln.startswith("stage 1  eval at step ")]
    assert evals and evals[-1].startswith("stage 1  eval at step 8/8  eval loss "), r.stdout  # the held-out loss
    raw = cli(pipeline_project, "logs", run.id, "--raw", check=True).stdout
    assert "AMIGO_PROGRESS" in raw and len(raw.splitlines()) > len(r.stdout.splitlines())


def test_download_by_stage_to_folder(pipeline_project, tmp_path):
    """--to gets the adapter and metrics.json, in that folder (new, empty, or an earlier download: replaced);
    a folder of something else is refused, not nested into."""
    final = tmp_path / "final"
    r = cli(pipeline_project, "download", "--stage", "5", "--to", str(final), check=True)
    assert (final / "adapter_config.json").is_file(), r.stdout
    assert json.loads((final / "metrics.json").read_text())["stage"] == 5
    assert f"metrics: {final / 'metrics.json'}" in r.stdout
    cli(pipeline_project, "download", "--stage", "4", "--to", str(final), check=True)  # an earlier download
    assert json.loads((final / "metrics.json").read_text())["stage"] == 4 and not (final / "adapter").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("x")
    r = cli(pipeline_project, "download", "--stage", "5", "--to", str(other))
    assert r.returncode == 2 and "not empty and holds no adapter" in r.stderr, r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]


@pytest.mark.badinput
def test_download_bad_inputs(pipeline_project, tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    for args, expect in ((("download", "s9-nope"), "unknown run id"),
                         (("download", "--stage", "1", "--to", str(a_file)), "is a file"),
                         (("download", "--stage", "1", "--to", "/proc/amigo-nope"), "cannot write /proc/amigo-nope"),
                         (("logs", "no-such-run"), "unknown run id")):
        r = cli(pipeline_project, *args)
        assert r.returncode == 2 and expect in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert a_file.read_text() == "x"


@pytest.mark.badinput
def test_stage_without_previous_adapter_names_missing_stage(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "launch", "--stage", "3")
    assert r.returncode == 2
    assert "no stage 2 run succeeded" in r.stderr and "--from-base" in r.stderr


def test_logs_follow_on_running_run_and_status_while_writing(tmp_path, tiny_model):
    """`status` while the worker writes to the DB and the log shows the run RUNNING (the run is held
    at 0.5 s a step and the test waits until the record says so: no either-or); `logs -f` then follows
    it to SUCCEEDED."""
    project = make_project(tmp_path / "p", tiny_model)
    slow = {"AMIGO_FAULT_STEP_DELAY_S": "0.5"}  # 8 steps: ~4 s of training still ahead when status runs
    r = cli(project, "launch", "--stage", "1", "--detach", env=slow, check=True)
    run_id = next(w for w in r.stdout.split() if w.startswith("s1-local-"))
    log = project / ".amigo" / "runs" / run_id / "train.log"
    wait_for(lambda: runs_of(project)[0].status == "RUNNING" and log.is_file() and "AMIGO_PROGRESS" in log.read_text(),
             "the run to be training", timeout=180)
    st = cli(project, "status", check=True)
    row = next(ln for ln in st.stdout.splitlines() if run_id in ln)
    assert "RUNNING" in row, st.stdout
    f = cli(project, "logs", run_id, "-f", check=True)
    assert f"{run_id}: SUCCEEDED" in f.stdout, f.stdout[-2000:]
    assert runs_of(project)[0].status == "SUCCEEDED"


@pytest.mark.badinput
def test_missing_s3_bucket_is_one_line_and_writes_nothing(tmp_path, tiny_model, moto_server):
    project = make_project(tmp_path / "p", tiny_model, "s3://no-such-bucket-amigo/x", moto_server)
    (project / ".env").write_text("AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n")
    r = cli(project, "launch", "--stage", "1")
    assert r.returncode == 2 and "no-such-bucket-amigo" in r.stderr and "does not exist" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (project / ".amigo").exists() or not any((project / ".amigo").rglob("*.jsonl")), "nothing prepared"


def test_launch_cloud_auto_says_what_it_chose_and_why(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "launch", "--stage", "1", "--cloud", "auto", "--detach", check=True)
    assert "--cloud auto chose" in r.stdout and "cheapest" in r.stdout, r.stdout
    run_id = next(w for w in r.stdout.split() if w.startswith("s1-"))
    cli(project, "logs", run_id, "-f", check=True)


def test_down_saves_a_checkpoint_and_launch_resume_continues_from_it(tmp_path, tiny_model):
    """`amigo-burst down RUN` SIGTERMs the training process: it saves the step in flight, the run is STOPPED
    with a reason that says where and how to continue, and `launch --stage 1 --resume` finishes it."""
    import json as _json

    from tests.helpers import wait_for

    project = make_project(tmp_path / "p", tiny_model)
    slow = {"AMIGO_FAULT_STEP_DELAY_S": "0.5"}  # 8 steps of >= 0.5 s: time to stop it half-way
    r = cli(project, "launch", "--stage", "1", "--detach", env=slow, check=True)
    run_id = next(w for w in r.stdout.split() if w.startswith("s1-local-"))
    log = project / ".amigo" / "runs" / run_id / "train.log"

    def progressed() -> bool:
        steps = [_json.loads(ln.split(" ", 1)[1])["step"] for ln in (log.read_text() if log.is_file() else "")
                 .splitlines() if ln.startswith("AMIGO_PROGRESS ")]
        return bool(steps) and max(steps) >= 2

    wait_for(progressed, "training past step 2", timeout=240)
    cli(project, "down", run_id, check=True)
    run = wait_for(lambda: next((x for x in runs_of(project) if x.id == run_id and x.ended), None),
                   "the worker to record the stop", timeout=240)
    m = run.metrics
    assert run.status == "STOPPED" and m["exit_reason"] == "stopped" and m["stop_signal"] == "SIGTERM", run
    step = m["steps"]
    assert 2 <= step < 8
    assert run.reason == (f"stopped by user (amigo-burst down) at step {step} of 8, checkpoint saved: "
                          "`amigo-burst launch --stage 1 --resume` continues it")

    r = cli(project, "launch", "--stage", "1", "--resume", check=True)
    done = next(x for x in runs_of(project) if x.id == run_id)
    assert done.status == "SUCCEEDED", r.stdout[-2000:]
    m = done.metrics
    assert m["resumed_from"].endswith(f"checkpoint-{step}") and m["steps"] == 8 and m["steps_this_run"] == 8 - step
    assert m["eval_loss"]["final"] is not None  # validation ran and the record carries it


def test_clean_frees_work_copies_and_keeps_adapters_metrics_records(pipeline_project):
    """`clean --dry-run` says what it would free and removes nothing; `clean` removes the finished runs'
    .amigo/work/<run> (train/ copy, inputs, checkpoints) and says how much; adapters, metrics, records
    stay, a download still verifies; a running run's work copy is never touched."""
    import os

    from amigo_burst.lifecycle.clean import tree_bytes
    from amigo_burst.state.records import Run

    work = pipeline_project / ".amigo" / "work"
    before = {p.name: tree_bytes(p) for p in work.iterdir()}
    assert any((work / rid / "outputs" / "checkpoints").is_dir() for rid in before)
    live = Run(id="s3-local-20991231-000000-beef", stage=3, target="local-rtx4050", status="RUNNING",
               pid=os.getpid())  # this process: alive, as a worker would be
    records(pipeline_project).create(live)
    (work / live.id / "outputs").mkdir(parents=True)
    (work / live.id / "outputs" / "step.bin").write_bytes(b"x" * 1000)
    records_before = [(r.id, r.status) for r in runs_of(pipeline_project)]

    dry = cli(pipeline_project, "clean", "--dry-run", check=True)
    total = sum(before.values())
    assert f"would free {total / 1e6:.1f} MB" in dry.stdout, (total, dry.stdout)
    assert {p.name: tree_bytes(p) for p in work.iterdir() if p.name != live.id} == before

    r = cli(pipeline_project, "clean", check=True)
    assert f"freed {total / 1e6:.1f} MB ({len(before)} folder(s))" in r.stdout, r.stdout
    assert [p.name for p in work.iterdir()] == [live.id] and (work / live.id / "outputs" / "step.bin").is_file()
    assert f"kept {live.id}: running" in r.stdout
    assert [(x.id, x.status) for x in runs_of(pipeline_project)] == records_before
    for run in runs_of(pipeline_project):
        if run.status == "SUCCEEDED":
            d = pipeline_project / ".amigo" / "runs" / run.id
            assert (d / "adapter" / "adapter_model.safetensors").is_file() and (d / "metrics.json").is_file()
    cli(pipeline_project, "download", "--stage", "5", check=True)
    records(pipeline_project).update(live.id, status="STOPPED")
