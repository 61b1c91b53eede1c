"""The shipped amigo.toml, end to end on the tiny stand-in: `pipeline` over local real-shaped copies of
its five datasets, `rehearse` over a loopback dataset hub, and what a failing rehearsal says.

Real parts: the `amigo-burst` CLI as a subprocess, detached workers, the target YAMLs' setup and run
through the local runner, TRL training of a tiny random-weight model, the file:// store, SQLite, and
for the hub path `datasets` / huggingface_hub talking HTTP to tests/hub_server.py on 127.0.0.1.
Only the shipped file's dataset *sources* (and, for `pipeline`, the base model) are replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from amigo_burst.config import load_config
from amigo_burst.lifecycle.rehearsal_plan import check_sky_tasks, stage_plans
from amigo_burst.lifecycle.rehearsal_record import config_hash, unrehearsed_warning
from amigo_burst.lifecycle.rehearse import toml_dump
from tests.dataset_shapes import shipped_with_local_data, write_hub
from tests.helpers import cache_hub_config, cli, invoke
from tests.hub_server import FakeHub

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (REPO / "amigo.toml").read_text()


def hub_env(hub: FakeHub, tmp: Path) -> dict:
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}


# --- fast: the record, the warning, the project file ------------------------------------------------


def test_warning_before_a_paid_cloud_until_a_rehearsal_passed_for_this_config(tmp_path, monkeypatch):
    (tmp_path / "amigo.toml").write_text(SHIPPED)
    # Vast's credentials are its key file alone (SkyPilot's check calls no API): the launch passes the
    # credential preflight, then warns, then stops at the missing stage 1 (no paid call is ever made)
    home = tmp_path / "home"
    (home / ".config" / "vastai").mkdir(parents=True)
    (home / ".config" / "vastai" / "vast_api_key").write_text("k-0123\n")
    monkeypatch.setenv("HOME", str(home))
    # the base model was downloaded before: its config.json is in the cache (launch checks the base first)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_hub_config(tmp_path / "hf", "mistralai/Mistral-Nemo-Base-2407")))
    cfg = load_config(tmp_path / "amigo.toml")
    w = unrehearsed_warning(cfg, ["vast"])
    assert w and "amigo-burst rehearse" in w and config_hash(cfg) in w and "vast" in w
    assert unrehearsed_warning(cfg, ["local"]) is None, "the laptop costs nothing: no warning"
    r = invoke("--config", str(tmp_path / "amigo.toml"), "launch", "--stage", "2", "--cloud", "vast")
    assert "warning: no rehearsal passed" in r.output and "amigo-burst rehearse" in r.output
    assert r.exit_code == 2 and "no stage 1 run succeeded" in r.output, "a warning, not a refusal"

    record = tmp_path / ".amigo" / "rehearsal" / "rehearsal.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"passed": True, "config_hash": config_hash(cfg)}))
    assert unrehearsed_warning(cfg, ["vast"]) is None
    r = invoke("--config", str(tmp_path / "amigo.toml"), "pipeline", "--stages", "2")
    assert "no stage 1 run succeeded" in r.output and "warning: no rehearsal" not in r.output

    # a change to what trains (a learning rate) needs a new rehearsal; a budget does not
    (tmp_path / "amigo.toml").write_text(SHIPPED.replace("max_usd = 25", "max_usd = 30"))
    assert unrehearsed_warning(load_config(tmp_path / "amigo.toml"), ["vast"]) is None
    (tmp_path / "amigo.toml").write_text(SHIPPED.replace("learning_rate = 1e-4", "learning_rate = 2e-4", 1))
    assert unrehearsed_warning(load_config(tmp_path / "amigo.toml"), ["runpod"])


def test_the_rehearsal_runs_each_shipped_stage_with_the_plans_method_and_batch(tmp_path):
    """What `launch --stage N` of the shipped amigo.toml would run, stage by stage (the plan's machine,
    method and micro-batch x grad-accum; later stages keep stage 1's method), is what the rehearsal
    project trains with; nothing is refused."""
    from amigo_burst import planner
    from amigo_burst.lifecycle.rehearse import RehearseOptions, write_project

    (tmp_path / "amigo.toml").write_text(SHIPPED)
    cfg = load_config(tmp_path / "amigo.toml")
    plans = stage_plans(cfg)
    assert sorted(plans) == [1, 2, 3, 4, 5] and not any(p.refused for p in plans.values())
    first = planner.estimate_for_launch(cfg, 1, planner_target(cfg, 1), planner.stage_tokens(cfg, 1))
    for n, p in plans.items():
        chained = cfg.model_copy(update={"model": cfg.model.model_copy(update={"method": plans[1].method})})
        cell = planner.estimate_for_launch(chained if n > 1 else cfg, n, planner_target(cfg, n),
                                           planner.stage_tokens(cfg, n))
        assert (p.method, p.micro_batch, p.grad_accum, p.gpu_count, p.machine) == (
            cell.method, cell.micro_batch, cell.grad_accum, cell.gpu_count, cell.gpu_label), n
        assert p.target == "vast"
    assert plans[1].method == first.method == "lora"  # the plan rents a 48 GB card: bf16 LoRA, not NF4
    write_project(cfg, tmp_path / "r", tmp_path / "standin", RehearseOptions(), plans)
    rcfg = load_config(tmp_path / "r" / "amigo.toml")
    assert rcfg.model.method == plans[1].method and rcfg.model.arch == "tiny"
    for n, p in plans.items():
        assert (rcfg.stages[n].micro_batch, rcfg.stages[n].grad_accum) == (p.micro_batch, p.grad_accum)
    # SkyPilot's own validation of the task a launch of the plan builds, offline
    assert check_sky_tasks(cfg) == {"vast": ""}


def planner_target(cfg, n):
    from amigo_burst.lifecycle.launch import resolve_target

    return resolve_target(cfg, n, None)


def test_a_stage_a_real_launch_would_refuse_fails_its_rehearsal(tmp_path):
    """Stage 1 of the 12B plan on the 6 GB laptop: `launch --stage 1` refuses it at once, so the rehearsal
    reports it failed with that reason and trains nothing (no --force anywhere); so does a stage over
    its budget."""
    from amigo_burst.lifecycle.rehearse import run_stage

    (tmp_path / "amigo.toml").write_text(SHIPPED.replace('learning_rate = 2e-4\n', 'learning_rate = 2e-4\ntarget = "local"\n', 1))
    cfg = load_config(tmp_path / "amigo.toml")
    plans = stage_plans(cfg)
    assert plans[1].target == "local-rtx4050" and "does not fit local-rtx4050" in plans[1].refused
    assert not plans[2].refused
    res = run_stage(cfg, 1, "local-rtx4050", "local-rtx4050", None, None, plans[1])  # never reaches launch
    assert res.status == "failed" and res.run_id is None and "\n" not in res.reason
    assert res.reason.startswith("`launch --stage 1` would be refused: stage 1 does not fit local-rtx4050")
    over = load_config_text(tmp_path, SHIPPED.replace("max_usd = 25", "max_usd = 0.5"))
    assert "exceeds the $0.50 budget" in stage_plans(over)[2].refused


def load_config_text(tmp_path, text):
    (tmp_path / "other.toml").write_text(text)
    return load_config(tmp_path / "other.toml")


def test_editing_train_or_sky_clears_the_rehearsal_mark(tmp_path):
    """The mark is for what trains: the training code (train/) and the targets' task YAMLs too."""
    import shutil

    from amigo_burst.lifecycle.rehearsal_record import passed_record

    project = tmp_path / "p"
    project.mkdir()
    (project / "amigo.toml").write_text(SHIPPED)
    shutil.copytree(REPO / "sky", project / "sky")  # the project's own sky/ (targets.sky_dir)
    train = tmp_path / "train"
    shutil.copytree(REPO / "train", train, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = load_config(project / "amigo.toml")
    mark = config_hash(cfg, train)
    assert mark == config_hash(cfg, train) and config_hash(cfg) == config_hash(cfg, REPO / "train")
    (train / "sft.py").write_text((train / "sft.py").read_text() + "\n# a change\n")
    assert config_hash(cfg, train) != mark
    (train / "sft.py").write_text((train / "sft.py").read_text().replace("\n# a change\n", ""))
    assert config_hash(cfg, train) == mark
    (train / "__pycache__").mkdir(exist_ok=True)
    (train / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert config_hash(cfg, train) == mark  # caches are not code
    # a target YAML the stages run on: the mark goes, and with it the record's "passed"
    record = project / ".amigo" / "rehearsal" / "rehearsal.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"passed": True, "config_hash": config_hash(cfg)}))
    assert passed_record(cfg) is not None
    y = project / "sky" / "vast.yaml"
    y.write_text(y.read_text().replace("disk_size: 120", "disk_size: 200"))
    assert passed_record(cfg) is None and unrehearsed_warning(cfg, ["vast"])
    # a YAML no stage runs on does not matter
    y.write_text(y.read_text().replace("disk_size: 200", "disk_size: 120"))
    r = project / "sky" / "runpod.yaml"
    r.write_text(r.read_text().replace("disk_size: 120", "disk_size: 200"))
    assert passed_record(cfg) is not None


def test_skypilot_validation_refuses_a_broken_task_offline(tmp_path):
    import shutil

    project = tmp_path / "p"
    project.mkdir()
    (project / "amigo.toml").write_text(SHIPPED)
    shutil.copytree(REPO / "sky", project / "sky")
    y = project / "sky" / "vast.yaml"
    y.write_text(y.read_text().replace("disk_size: 120", "disk_size: lots"))
    found = check_sky_tasks(load_config(project / "amigo.toml"))
    assert set(found) == {"vast"} and "disk_size" in found["vast"] and "\n" not in found["vast"]


def test_the_rehearsal_config_reads_back_as_the_same_plan(tmp_path):
    (tmp_path / "amigo.toml").write_text(SHIPPED)
    cfg = load_config(tmp_path / "amigo.toml")
    (tmp_path / "copy.toml").write_text(toml_dump(cfg.model_dump(mode="json", exclude_none=True)))
    again = load_config(tmp_path / "copy.toml")
    assert again.model_dump(exclude={"path"}) == cfg.model_dump(exclude={"path"})
    assert again.stages[5].learning_rate == 5e-6


def test_standin_takes_the_base_family_and_its_tokenizer_when_it_can_be_had(tmp_path, tiny_model):
    from train.tiny import write_standin

    own = write_standin(tmp_path / "a", str(tiny_model))  # a local base: its config and tokenizer are here
    assert own["family"] == "llama" and "cached" in own["tokenizer"]
    hinted = write_standin(tmp_path / "b", "mistralai/Mistral-Nemo-Base-2407", "mistral-nemo-12b")
    assert hinted["family"] == "mistral" and hinted["tokenizer"].startswith("built-in")
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["model_type"] == "mistral" and cfg["num_hidden_layers"] == 2


# --- slow: the shipped plan, end to end -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rehearse_runs_the_shipped_amigo_toml_over_the_hub(tmp_path):
    """The unmodified amigo.toml: hub ids -> rows over HTTP (a loading script passed by, a README's
    configs, a config+split pair), a stand-in Mistral, each target's YAML: exit 0 and the table.

    The shipped plan's five stages, end to end, once: every stage trains with the real plan's settings
    (column maps, filters, seq lens, learning rates, method and batch) over real-shaped rows - all 40 of
    each dataset (--rows 40), so each stage's data tally is the whole file's - continues the previous
    stage's adapter and records its data. (This test also does what a separate `pipeline --plan local`
    run of the shipped config over local copies checked: the same five trainings, ~2 min, twice.)"""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "amigo.toml").write_text(SHIPPED)
    with FakeHub(write_hub(tmp_path / "hub")) as hub:
        r = cli(project, "rehearse", "--rows", "40", "--steps", "2", env=hub_env(hub, tmp_path), timeout=1500)
        requests = list(hub.requests)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-3000:])
    out = r.stdout
    for line in ("1 nl2code", "2 context", "3 debugging", "4 reasoning", "5 preference"):
        assert line in out
    assert out.count("passed") >= 6 and "rehearsal passed" in out
    assert "stand-in: mistral" in out and "vast" in out
    assert "field 'error' is empty" in out and "JetBrains-Research/mbpp_w_stacktraces[" in out
    assert "← stage 4" in out
    rec = json.loads((project / ".amigo" / "rehearsal" / "rehearsal.json").read_text())
    assert rec["passed"] and rec["config_hash"] == config_hash(load_config(project / "amigo.toml"))
    assert [s["status"] for s in rec["stages"]] == ["passed"] * 5
    assert all(s["loss"]["steps"] == 2 for s in rec["stages"])
    # each stage continues the one before it, and its data tally is the whole 40-row file's
    assert [s["continues_from"] for s in rec["stages"]] == [None] + [s["run_id"] for s in rec["stages"][:-1]]
    dropped = {s["stage"]: {d["reason"]: d["count"] for d in s["dropped"]} for s in rec["stages"]}
    assert dropped[1] == {"missing field 'code'": 1}
    assert dropped[2]["licence not in dataset.licenses"] == 8 and rec["stages"][1]["trimmed"]["count"] == 1
    assert dropped[3]["field 'error' is empty"] == 16 and rec["stages"][2]["rows"]["used"] == 24
    assert dropped[4]["over max_seq_len 8192"] == 1
    assert dropped[5]["missing field 'rejected'"] == 1
    # every stage on the cloud (a 12B base does not fit the laptop): fetched and prepared by the target's run.sh
    assert [s["prepared"] for s in rec["stages"]] == ["target"] * 5
    # each stage trained with the method and micro-batch x grad-accum the real launch would use
    plans = stage_plans(load_config(project / "amigo.toml"))
    for s in rec["stages"]:
        p = plans[s["stage"]]
        assert s["plan"] == {"machine": p.machine, "method": p.method, "micro_batch": p.micro_batch,
                             "grad_accum": p.grad_accum, "gpu_count": p.gpu_count}, s["stage"]
        assert s["ran"] == {"method": p.method, "micro_batch": p.micro_batch, "grad_accum": p.grad_accum}
    assert rec["sky"] == {"vast": ""} and "SkyPilot accepts vast's task" in out
    runs_dir = project / ".amigo" / "rehearsal" / "project" / ".amigo" / "runs"
    for s in rec["stages"]:
        log = (runs_dir / s["run_id"] / "train.log").read_text()
        assert '"where": "target"' in log and '"sample_matches": true' in log, s["stage"]
    # the rows came over HTTP, commitpackft through its data file (its loading script never fetched)
    got = {p for _, p in requests}
    assert "/datasets/bigcode/commitpackft/resolve/main/data/python/data.jsonl" in got
    assert not any(p.endswith("commitpackft.py") and "resolve" in p and "GET" == m for m, p in requests)
    assert any("nvidia/OpenCodeReasoning" in p and "split_0/" in p for p in got)
    # the project's own records and store are untouched
    assert not (project / ".amigo" / "state.db").exists() and not (project / ".amigo" / "store").exists()
    assert os.path.isdir(project / ".amigo" / "rehearsal" / "project" / ".amigo" / "runs")


@pytest.mark.slow
def test_rehearse_fails_a_stage_with_mostly_unusable_rows_in_one_line_and_still_checks_the_rest(tmp_path):
    """Stage 1 mapped to a column that is null in most rows: the stage fails before training, the
    reason is one line with counts and the first row; later stages' data are still checked; exit 1."""
    hub_root = write_hub(tmp_path / "hub")
    text = shipped_with_local_data(SHIPPED, hub_root).replace('instruction = "problem", code = "solution"',
                                                                       'instruction = "problem", code = "seed_code"')
    project = tmp_path / "proj"
    project.mkdir()
    (project / "amigo.toml").write_text(text)
    r = cli(project, "rehearse", "--rows", "8", "--json", timeout=900)
    assert r.returncode == 1, (r.stdout[-3000:], r.stderr[-3000:])
    doc = json.loads(r.stdout)
    assert set(doc) >= {"passed", "config_hash", "model", "rows", "steps", "project", "log", "stages"}
    first = doc["stages"][0]
    assert first["status"] == "failed" and "\n" not in first["reason"]
    assert "40 of 40 rows unusable" in first["reason"] and "missing column 'seed_code' (columns.code) x40 (first: " \
        in first["reason"] and "the source's columns: lang, raw_index" in first["reason"]  # the map's other side
    assert [s["status"] for s in doc["stages"][1:]] == ["not run"] * 4
    assert doc["stages"][2]["rows"]["used"] == 8 and doc["stages"][2]["dropped"][0]["reason"] == "field 'error' is empty"
    assert not doc["passed"] and not (project / ".amigo" / "state.db").exists()


def test_the_rehearsal_runs_the_benchmark_on_one_problem(tmp_path):
    """run.sh benchmarks each stage: a rehearsal keeps that step, on one HumanEval problem with short answers
    (the shipped config asks for all 164: ~10 min a stage on the stand-in, for nothing); no benchmark stays none."""
    from amigo_burst.lifecycle.rehearse import RehearseOptions, write_project

    (tmp_path / "amigo.toml").write_text(SHIPPED)
    cfg = load_config(tmp_path / "amigo.toml")
    assert cfg.eval.limit is None  # the real plan: all 164
    write_project(cfg, tmp_path / "r", tmp_path / "standin", RehearseOptions())
    rcfg = load_config(tmp_path / "r" / "amigo.toml")
    assert (rcfg.eval.limit, rcfg.eval.max_new_tokens) == (1, 32)
    (tmp_path / "amigo.toml").write_text(SHIPPED + "\n[eval]\nlimit = 0\n")
    write_project(load_config(tmp_path / "amigo.toml"), tmp_path / "r0", tmp_path / "standin", RehearseOptions())
    assert load_config(tmp_path / "r0" / "amigo.toml").eval.limit == 0
