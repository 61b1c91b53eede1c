"""Issue 25, a second pass as a new user: each numbered item of the issue, as the user met it.

Real parts throughout: run records in SQLite through RunStore, the CLI in-process (CliRunner) at a
pinned width, SkyPilot's own SDK against an API endpoint nobody listens on, a Hugging Face cache laid
out as huggingface_hub writes it, real files (CSV, parquet, BOM) through train/prepare.py. Where a
test stands in for something that cannot happen here it says so. A few slow tests train the tiny model.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from amigo_burst.errors import UserError
from amigo_burst.state.records import Run, RunStore, pid_alive
from tests.helpers import (
    cache_hub_config,
    cli,
    cli_argv,
    invoke,
    make_project,
    records,
    reserved_port,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = (REPO / "presets" / "demo.toml").read_text()
S1, S2, S2P, S3, S4 = ("s1-local-20261201-100000-aa01", "s2-local-20261201-110000-bb02",
                       "s2-local-20261201-120000-pr0b", "s3-local-20261201-130000-cc03", "s4-local-20261201-140000-dd04")


def ok_run(rid: str, stage: int, parent: str | None = None, probe: bool = False, **kw) -> Run:
    arts = {**({"from_run": parent} if parent else {}), **({"probe": True} if probe else {})}
    hhmm = rid.split("-")[3]
    return Run(id=rid, stage=stage, target="local-rtx4050", status="SUCCEEDED", child_pid=1, artifacts=arts,
               started=f"2026-12-01T{hhmm[:2]}:{hhmm[2:4]}:00Z", **kw)


@pytest.fixture
def demo(tmp_path, tiny_model) -> Path:
    """The demo project with a real base model folder, no runs."""
    return make_project(tmp_path / "proj", tiny_model)


def run_cli(project: Path, *args: str, width: int = 100, env: dict | None = None):
    return invoke("--config", str(project / "amigo.toml"), *args, env={"COLUMNS": str(width), **(env or {})})


def one_error_line(r, expect: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and expect in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


# --- 1. a probe is never a finished stage ---------------------------------------------------------------
def test_a_probe_is_never_the_done_run_of_its_stage():
    """`probe --stage 2` then `pipeline`: the probe's 2-step adapter must not stand for stage 2."""
    from amigo_burst.lifecycle.pipeline import done_runs

    runs = [ok_run(S1, 1), ok_run(S2P, 2, S1, probe=True)]
    assert {s: r.id for s, r in done_runs(runs).items()} == {1: S1}
    runs = [ok_run(S1, 1), ok_run(S2, 2, S1), ok_run(S2P, 2, S1, probe=True)]  # a probe after the real run
    assert done_runs(runs)[2].id == S2


def test_the_humaneval_table_never_takes_a_probes_score():
    from amigo_burst.planning.report import build_benchmarks

    he = {"humaneval": {"problems": 3, "pass_at_1": 0.5}}
    runs = [{"id": S2, "stage": 2, "status": "SUCCEEDED", "started": "2026-12-01T11:00:00Z", "metrics": he,
             "artifacts": {}},
            {"id": S2P, "stage": 2, "status": "SUCCEEDED", "started": "2026-12-01T12:00:00Z",
             "metrics": {"humaneval": {"problems": 3, "pass_at_1": 1.0}}, "artifacts": {"probe": True}}]
    assert [(b["id"], b["pass_at_1"]) for b in build_benchmarks(runs)] == [(S2, 0.5)]


def test_status_shows_a_probe_as_a_probe_and_from_refuses_one(demo):
    runs = RunStore(demo / ".amigo" / "state.db")
    runs.create(ok_run(S1, 1))
    runs.create(ok_run(S2P, 2, S1, probe=True))
    r = run_cli(demo, "status")
    assert r.exit_code == 0 and re.search(rf"{S2P}\s+2\s+local-rtx4050\s+SUCCEEDED \(probe\)", r.output), r.output
    rows = {x["id"]: x for x in json.loads(run_cli(demo, "status", "--json").output)}
    assert rows[S2P]["probe"] is True and rows[S1]["probe"] is False
    one_error_line(run_cli(demo, "launch", "--stage", "3", "--from", S2P), "that is a probe")


# --- 2. no SkyPilot API server for an all-local project; its lines plain; a gone server in one line ----
def test_down_on_an_all_local_project_never_asks_skypilot(demo, monkeypatch, tmp_path):
    """`down --all` / `down --cluster amigo-x` where no target is a cloud: SkyPilot is not asked (its first
    call starts an API server that stays running). The spy fails the test if it is."""
    from amigo_burst.lifecycle import teardown

    def asked(*_a, **_k):
        raise AssertionError("SkyPilot was asked: an API server would have started")

    monkeypatch.setattr(teardown, "our_clusters", asked)
    monkeypatch.setattr(teardown, "sky_down", asked)
    home = tmp_path / "home"
    home.mkdir()
    r = run_cli(demo, "down", "--all", env={"HOME": str(home)})
    assert r.exit_code == 0 and "nothing to stop" in r.output, r.output
    one_error_line(run_cli(demo, "down", "--cluster", "amigo-foo", env={"HOME": str(home)}),
                   "this project has no cloud target")
    assert not (home / ".sky").exists()


def test_skypilot_log_lines_keep_no_colour_codes_off_a_terminal():
    from amigo_burst.runners.sky_api import plain_logs

    log = logging.getLogger("amigo-test-sky")
    out = io.StringIO()  # a pipe, as `amigo-burst down --all | cat` gives it
    h = logging.StreamHandler(out)
    log.addHandler(h)
    log.propagate = False
    try:
        plain_logs(log)
        plain_logs(log)  # once per handler
        log.warning("\x1b[2mFailed to connect to SkyPilot API server. Starting a local server.\x1b[0m")
        assert out.getvalue() == "Failed to connect to SkyPilot API server. Starting a local server.\n"
        assert len(h.filters) == 1
    finally:
        log.removeHandler(h)


def test_an_api_server_that_does_not_answer_is_one_line(demo, tmp_path):
    """SkyPilot's real SDK against an endpoint nobody listens on (it starts no server for a non-local
    endpoint): one line, exit 2, not an ApiServerConnectionError chain."""
    toml = demo / "amigo.toml"
    toml.write_text(toml.read_text().replace('cloud = "local"', 'cloud = "vast"'))
    home = tmp_path / "home"
    home.mkdir()
    r = run_cli(demo, "down", "--cluster", "amigo-s2-vast-20261201-000000-abcd",
                env={"HOME": str(home), "SKYPILOT_API_SERVER_ENDPOINT": f"http://127.0.0.1:{reserved_port()}"})
    one_error_line(r, "SkyPilot's API server is not answering")
    assert "sky api start" in r.output


# --- 3. no tracebacks: hostile arguments to every command ---------------------------------------------
BAD_UTF8 = os.fsdecode(b"/tmp/\xff\xfe/amigo.toml")  # what Python makes of bytes that are not UTF-8
COMMANDS = [("stages",), ("targets",), ("doctor",), ("config", "check"), ("estimate",), ("plan",), ("prices",),
            ("report",), ("probe", "--stage", "1"), ("launch", "--stage", "1"), ("logs", "x"), ("status",),
            ("download", "--stage", "1"), ("down", "--all"), ("pipeline",), ("clean",), ("rehearse",),
            ("eval", "--stage", "1"), ("try", "--stage", "1", "hi"),
            ("export", "--stage", "1", "--format", "merged", "--out", "x")]
HOSTILE = [
    # numbers: zero, negative, nan
    (("estimate", "--download-gbps", "0"), "download-gbps must be a number > 0"),
    (("estimate", "--download-gbps", "-1"), "download-gbps must be a number > 0"),
    (("estimate", "--epochs", "nan"), "epochs must be a number > 0"),
    (("estimate", "--epochs", "0"), "epochs must be a number > 0"),
    (("estimate", "--rank", "0"), "rank must be >= 1"),
    (("estimate", "--seq-len", "-5"), "seq-len must be >= 1"),
    (("estimate", "--micro-batch", "0"), "micro-batch must be >= 1"),
    (("estimate", "--tokens", "nan"), "is not a count"),
    (("estimate", "--gpu", "H100:0"), "whole number >= 1"),
    (("plan", "--budget-usd", "nan"), "--budget-usd must be a positive number"),
    (("plan", "--deadline-hours", "-1"), "--deadline-hours must be a positive number"),
    (("launch", "--stage", "1", "--max-usd", "0"), "--max-usd must be a number > 0"),
    (("pipeline", "--max-usd", "nan"), "--max-usd must be a number > 0"),
    (("probe", "--stage", "1", "--steps", "0"), "--steps"),
    (("rehearse", "--rows", "0"), "--rows and --steps must be >= 1"),
    (("rehearse", "--steps", "-1"), "--rows and --steps must be >= 1"),
    (("eval", "--stage", "1", "--limit", "-1"), "HumanEval has 164 problems"),
    (("eval", "--stage", "1", "--max-new-tokens", "0"), "--max-new-tokens must be >= 1"),
    (("try", "--stage", "1", "hi", "--temperature", "-1"), "--temperature must be a number >= 0"),
    (("try", "--stage", "1", "hi", "--temperature", "nan"), "--temperature must be a number >= 0"),
    (("try", "--stage", "1", "hi", "--max-new-tokens", "0"), "--max-new-tokens must be >= 1"),
    # special paths
    (("report", "--out", "/proc/x"), "cannot write in /proc"),
    (("report", "--out", "/sys/x"), "cannot write in /sys"),
    (("report", "--out", "amigo.toml/sub"), "amigo.toml"),
    (("export", "--stage", "1", "--format", "merged", "--out", "/proc/x"), "cannot write in /proc"),
    (("export", "--stage", "1", "--format", "merged", "--out", "/sys/x"), "cannot write in /sys"),
    (("export", "--stage", "1", "--format", "merged", "--out", "{project}/amigo.toml/sub"), "is a file, not a folder"),
    (("download", "--stage", "1", "--to", "/proc/x"), ""),
    (("logs", "../../etc/passwd"), "unknown run id"),
    (("status", "/"), "unknown run id"),
    # text that is not UTF-8
    (("try", "--stage", "1", os.fsdecode(b"\xff\xfe")), "is not UTF-8 text"),
    (("launch", "--stage", os.fsdecode(b"\xc3")), "is not UTF-8 text"),
    (("export", "--stage", "1", "--format", "merged", "--out", os.fsdecode(b"/tmp/\xff")), "is not UTF-8 text"),
]


@pytest.mark.badinput
@pytest.mark.parametrize("args, expect", HOSTILE, ids=[" ".join(a)[:60] for a, _ in HOSTILE])
def test_hostile_arguments_are_one_line_exit_2(demo, args, expect):
    """Zero, negative and nan numbers, /proc /sys and a file's child as paths, bytes that are not UTF-8:
    one line, exit 2, no traceback, nothing recorded."""
    r = run_cli(demo, *(a.replace("{project}", str(demo)) for a in args))
    one_error_line(r, expect)
    assert not (demo / ".amigo" / "state.db").exists() and not (demo / ".amigo" / "runs").exists()


@pytest.mark.badinput
@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
@pytest.mark.parametrize("config", [BAD_UTF8, "{project}/amigo.toml/sub", "/proc/self/mem"])  # (/proc/x, /: above)
def test_every_command_refuses_a_hostile_config_path_in_one_line(demo, cmd, config):
    r = invoke("--config", config.replace("{project}", str(demo)), *cmd, env={"COLUMNS": "100"})
    if cmd in (("stages",), ("prices",)):  # they read no config at all
        assert r.exit_code in (0, 2) and "Traceback" not in r.output, r.output
        return
    if cmd == ("doctor",):  # a broken config is one of doctor's checks (✗, exit 1), unless not UTF-8 (exit 2)
        assert r.exit_code in (1, 2) and "Traceback" not in r.output, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        return
    one_error_line(r, "")


@pytest.mark.slow  # a subprocess: in this process SkyPilot is imported already, and its import is what fails
def test_doctor_with_an_unwritable_home_says_so(demo):
    """HOME=/proc: SkyPilot cannot make ~/.sky when it is imported. A check line, no traceback."""
    r = cli(demo, "doctor", env={"HOME": "/proc"}, timeout=300)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-2000:]
    assert r.returncode in (0, 1) and "HOME must be a writable folder" in r.stdout, r.stdout


# --- 4. the base model, checked before anything is recorded or rented ----------------------------------
def broken_models(root: Path, tiny: Path) -> dict[str, tuple[Path, str]]:
    """name -> (model folder, what the refusal says)."""
    import shutil

    out = {"missing": (root / "nope", "does not exist")}
    for name, file, keep, say in (("truncated config", "config.json", 40, "config.json is not valid JSON"),
                                  ("unreadable tokenizer", "tokenizer.json", 100, "tokenizer.json is not valid JSON")):
        d = root / name.replace(" ", "-")
        shutil.copytree(tiny, d)
        (d / file).write_bytes((tiny / file).read_bytes()[:keep])
        out[name] = (d, say)
    return out


@pytest.mark.badinput
def test_a_broken_base_model_is_refused_by_every_command_before_anything_is_recorded(demo, tiny_model, tmp_path):
    for name, (folder, say) in broken_models(tmp_path / "models", tiny_model).items():
        toml = demo / "amigo.toml"
        toml.write_text(re.sub(r'(?m)^base = ".*"', f'base = "{folder}"', toml.read_text()))
        for args in (("config", "check"), ("plan",), ("plan", "--json"), ("launch", "--stage", "1"),
                     ("pipeline", "--plan", "local")):
            r = run_cli(demo, *args)
            one_error_line(r, say)
            assert "[model] base" in r.output, (name, args, r.output)
        assert not (demo / ".amigo").exists(), f"{name}: nothing recorded or prepared"


def test_a_hub_id_is_checked_in_the_cache_or_on_the_hub(demo, tmp_path, monkeypatch):
    """A hub id: cached -> its architecture and size; not cached and the hub unreachable -> `config check`,
    `launch` and `pipeline` refuse, `plan` warns (its numbers come from [model].arch)."""
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.basemodel import HubUnreachable, check_base

    toml = demo / "amigo.toml"
    toml.write_text(re.sub(r'(?m)^base = ".*"', 'base = "mistralai/Mistral-Nemo-Base-2407"', toml.read_text()))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{reserved_port()}")  # a hub nobody listens on
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubUnreachable, match="not in the Hugging Face cache while the hub is unreachable"):
        check_base(load_config(toml))
    one_error_line(run_cli(demo, "config", "check"), "the hub is unreachable")
    one_error_line(run_cli(demo, "launch", "--stage", "1"), "the hub is unreachable")
    one_error_line(run_cli(demo, "pipeline", "--plan", "local"), "the hub is unreachable")
    plan = json.loads(run_cli(demo, "plan", "--json").output)
    assert any("the hub is unreachable" in w for w in plan["warnings"])
    assert not (demo / ".amigo").exists()

    monkeypatch.setenv("HF_HUB_CACHE", str(cache_hub_config(tmp_path / "hf", "mistralai/Mistral-Nemo-Base-2407")))
    info = check_base(load_config(toml))
    assert (info.where, info.model_type, round(info.params / 1e9, 1)) == ("cache", "mistral", 12.2)
    r = run_cli(demo, "config", "check")
    assert r.exit_code == 0 and "mistral, 12.2B params" in r.output and "Hugging Face cache" in r.output, r.output


def test_config_check_names_a_good_folder_with_its_architecture_and_size(demo):
    r = run_cli(demo, "config", "check")
    assert r.exit_code == 0 and re.search(r"✓ base model \S+: local folder \(llama, 0\.2M params\)", r.output), r.output


# --- 5. kill -9 of training: the signal is the reason --------------------------------------------------
@pytest.mark.parametrize("rc", [-signal.SIGKILL, 128 + signal.SIGKILL])
def test_a_killed_training_process_is_the_reason_not_a_library_warning(rc, tmp_path):
    from amigo_burst.lifecycle.worker import LogSink, final_status

    sink = LogSink(tmp_path / "train.log", {})  # what the worker keeps as the reason
    sink("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'")
    assert sink.last_error == "", "a library's warning explains no failure"
    status, reason = final_status(rc, has_adapter=False, last_error=sink.last_error, recorded="RUNNING",
                                  recorded_reason=None, stage=1)
    assert status == "FAILED" and reason.startswith("training process killed (signal 9)"), reason


# --- 6. nonsense refused --------------------------------------------------------------------------------
@pytest.mark.badinput
@pytest.mark.parametrize("old, new, expect", [
    ("micro_batch = 4", "micro_batch = true", "stages.1.micro_batch: must be a whole number >= 1 or \"auto\""),
    ("micro_batch = 4", "micro_batch = 2.5", "stages.1.micro_batch: must be a whole number"),
    ("learning_rate = 1e-3", "learning_rate = nan", "stages.1.learning_rate: Input should be a finite number"),
    ('dataset = { path = "../train/samples/stage1.jsonl" }',
     'dataset = { path = "../train/samples/stage1.jsonl", columns = { foo = "prompt" } }',
     "stages.1.dataset.columns: 'foo' is not a field of stage 1 (its fields: instruction, code)"),
])
def test_nonsense_in_amigo_toml_is_refused_with_its_key(old, new, expect):
    from amigo_burst.config import parse_config

    with pytest.raises(UserError) as e:
        parse_config(DEMO.replace(old, new, 1))
    assert str(e.value) == f"amigo.toml: {expect}" or str(e.value).startswith(f"amigo.toml: {expect}"), str(e.value)


def test_estimate_takes_name_count_like_plan_and_launch(demo):
    r = run_cli(demo, "estimate", "--gpu", "H100:2", "--tokens", "1M", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["gpu_count"] == 2 and ":2" in d["usd_per_hour_source"], d


# --- 7. data as users hold it ---------------------------------------------------------------------------
def _prepare(path: Path, columns: dict | None = None):
    from train.prepare import Source, prepare
    from train.schema import stage_spec

    return prepare(stage_spec(1), Source(path=str(path), columns=columns or {}), path.parent / "out.jsonl")[0]


ROWS = [{"instruction": f"write f{i}", "code": f"def f{i}(): return {i}"} for i in range(6)]


def test_csv_tsv_and_parquet_are_read_and_a_bom_drops_no_row(tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in ROWS).encode())
    for name, delim in (("rows.csv", ","), ("rows.tsv", "\t")):
        with open(tmp_path / name, "w", newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8": a BOM
            w = csv.DictWriter(f, ["instruction", "code"], delimiter=delim)
            w.writeheader()
            w.writerows(ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "rows.PARQUET")
    for name in ("bom.jsonl", "rows.csv", "rows.tsv", "rows.PARQUET"):
        t = _prepare(tmp_path / name)
        assert (t.read, t.used, t.dropped) == (6, 6, 0), (name, t.reasons())
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[0] == ROWS[0]


@pytest.mark.badinput
def test_a_mapped_column_that_is_not_there_is_named_with_the_files_columns(tmp_path):
    from train.schema import TrainInputError

    src = [{"prompt": r["instruction"], "solution": r["code"]} for r in ROWS]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in src))
    (tmp_path / "a.csv").write_text("prompt,solution\n" + "".join(f"{r['prompt']},{r['solution']}\n" for r in src))
    with pytest.raises(TrainInputError, match=r"missing column 'question' \(columns.instruction\) x6 .*"
                                              r"the source's columns: prompt, solution"):
        _prepare(tmp_path / "a.jsonl", {"instruction": "question", "code": "solution"})
    with pytest.raises(TrainInputError, match=r"column 'question' \(dataset.columns\) not in the file; its columns: "
                                              r"prompt, solution"):
        _prepare(tmp_path / "a.csv", {"instruction": "question"})
    assert _prepare(tmp_path / "a.csv", {"instruction": "prompt", "code": "solution"}).used == 6


@pytest.mark.badinput
@pytest.mark.parametrize("name, expect", [("data.xlsx", ".xlsx is not a format amigo-burst reads"),
                                          ("folder", "is a folder: name the file")])
def test_a_folder_or_an_unknown_format_says_what_it_is(tmp_path, name, expect):
    from train.schema import TrainInputError

    p = tmp_path / name
    p.mkdir() if name == "folder" else p.write_bytes(b"PK\x03\x04")
    with pytest.raises(TrainInputError, match=re.escape(expect)):
        _prepare(p)


# --- 8. a stage left out of amigo.toml ------------------------------------------------------------------
def no_stage_3(project: Path) -> Path:
    toml = project / "amigo.toml"
    toml.write_text(re.sub(r"\[stages\.3\].*?(?=\[stages\.4\])", "", toml.read_text(), flags=re.S))
    return toml


def test_without_stage_3_stage_4_continues_stage_2_everywhere(demo):
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.pipeline import done_runs, pipeline_stages
    from amigo_burst.lifecycle.preflight import previous_run

    cfg = load_config(no_stage_3(demo))
    assert [cfg.previous_stage(n) for n in (1, 2, 4, 5)] == [None, 1, 2, 4]
    assert cfg.chain_note() == "stage 4 continues from stage 2's adapter (no [stages.3] in amigo.toml)"
    runs = RunStore(demo / ".amigo" / "state.db")
    for r in (ok_run(S1, 1), ok_run(S2, 2, S1), ok_run(S3, 3, S2), ok_run(S4, 4, S2)):
        runs.create(r)
    # done-detection: old stage 3 runs are no link of the chain; stage 4 from stage 2 is done
    assert {s: r.id for s, r in done_runs(runs.list(), cfg.stages).items()} == {1: S1, 2: S2, 4: S4}
    assert previous_run(4, None, False, runs, parent=cfg.previous_stage(4)).id == S2
    said = io.StringIO()
    from rich.console import Console

    con = Console(file=said, width=200)
    assert pipeline_stages(cfg, None, con) == [1, 2, 4, 5]
    assert pipeline_stages(cfg, (2, 3, 4), con) == [2, 4]
    assert "stage 3: not in amigo.toml, skipped" in said.getvalue()
    with pytest.raises(UserError, match=r"\[stages.3\] not in .*configured: 1, 2, 4, 5"):
        pipeline_stages(cfg, (3,), con)
    one_error_line(run_cli(demo, "launch", "--stage", "3"), "no [stages.3] section")
    one_error_line(run_cli(demo, "pipeline", "--stages", "3"), "[stages.3] not in")
    r = run_cli(demo, "plan")
    assert r.exit_code == 0 and "stage 4 continues from stage 2's adapter (no [stages.3] in amigo.toml)" in \
        " ".join(r.output.split()), r.output[-800:]


# --- 9. help text keeps its words ------------------------------------------------------------------------
def _commands():
    import typer.main

    from amigo_burst.cli.app import app

    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        for sub_name, sub in (subs or {None: cmd}).items():
            yield tuple(x for x in (name, sub_name) if x), sub


@pytest.mark.parametrize("path, cmd", list(_commands()), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_help_text_keeps_every_bracketed_word(path, cmd):
    """rich reads [eval], [lora], [model] as markup and drops them: "(default:  limit, else all)"."""
    r = invoke(*path, "--help", env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.output).split())
    texts = [p.help for p in cmd.params if getattr(p, "help", None)] + [cmd.help or ""]
    for text in texts:
        for word in re.findall(r"\\?\[[a-z_.]+\][.\w]*", text):
            assert word.lstrip("\\") in shown, f"{path}: {word.lstrip(chr(92))!r} lost from --help"


# --- 10. numbers a person can read ----------------------------------------------------------------------
def test_a_budget_refusal_shows_cents_that_are_not_zero():
    from amigo_burst.lifecycle.preflight import check_estimate
    from amigo_burst.planner import Budget
    from amigo_burst.targets import get_target

    class Est:
        usd, fits, reason = 0.0042, True, ""

    with pytest.raises(UserError) as e:
        check_estimate(1, get_target("local"), Est(), Budget(usd=0.001), force=False)
    assert str(e.value).startswith("estimated $0.0042 exceeds the $0.0010 budget by $0.0032"), str(e.value)


def test_narrow_terminals_keep_ids_states_and_figures_whole(demo):
    runs = RunStore(demo / ".amigo" / "state.db")
    runs.create(ok_run(S1, 1, usd_per_hour=0.0195, tokens_per_s=481.4,
                       estimate={"hours": 0.5, "usd": 0.01, "breakdown_gib": {"weights": 0.0004}},
                       metrics={"humaneval": {"problems": 3, "pass_at_1": 0.333}}))
    r = run_cli(demo, "status", width=40)
    assert r.exit_code == 0 and S1 in r.output and "SUCCEEDED" in r.output and "…" not in r.output, r.output
    assert max(len(x) for x in r.output.splitlines()) <= 40
    r = run_cli(demo, "plan", width=40)
    assert r.exit_code == 0 and "…" not in r.output and "$0" in r.output, r.output
    r = run_cli(demo, "status", S1, width=80)
    assert r.exit_code == 0 and "estimate:" in r.output and "breakdown_gib.weights:" in r.output, r.output
    assert max(len(x.rstrip()) for x in r.output.splitlines()) <= 80
    r = run_cli(demo, "report", width=80)
    # the HumanEval table whole: it names stages (their runs are the report's rows), each figure uncut
    bench = r.output.split("HumanEval pass@1 per stage", 1)[-1]
    assert r.exit_code == 0 and "0.333" in bench and "0.06-0.79" in bench and "…" not in bench, r.output


def test_doctor_wraps_at_a_terminal_and_stays_one_line_in_a_pipe():
    from rich.console import Console

    from amigo_burst.cli.info import print_check

    what = "SkyPilot cannot use vast (a target of this project)"
    fix = "no credentials: mkdir -p ~/.config/vastai && echo YOUR_KEY > ~/.config/vastai/vast_api_key"
    tty = io.StringIO()
    print_check(Console(file=tty, width=50, force_terminal=True, no_color=True), "fail", what, fix)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue()).splitlines()
    assert all(len(x) <= 50 for x in lines) and len(lines) >= 3, lines
    assert lines[0].startswith("✗ SkyPilot") and any(x.lstrip().startswith("→ no credentials") for x in lines)
    pipe = io.StringIO()
    print_check(Console(file=pipe, width=50), "fail", what, fix)
    assert pipe.getvalue().count("\n") == 1 and "vast_api_key" in pipe.getvalue()


# --- 11. the smaller ones ------------------------------------------------------------------------------
@pytest.mark.badinput
def test_gguf_without_llama_cpp_is_refused_before_any_merge(demo, monkeypatch):
    """Where llama-cpp-python is not installed (`make test` installs it: its absence is simulated by the
    package lookup llama_cpp_version() makes): refused before an adapter is fetched or a base merged."""
    import importlib.metadata as md

    from amigo_burst.lifecycle import export

    real = md.version

    def version(name):
        if name == "llama_cpp_python":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(export, "version", version, raising=False)
    monkeypatch.setattr(md, "version", version)
    monkeypatch.setattr(export, "merge", lambda *a, **k: pytest.fail("merged before refusing"))
    one_error_line(run_cli(demo, "export", "--stage", "1", "--format", "gguf", "--out", str(demo / "m.gguf")),
                   "GGUF export needs llama-cpp-python")


@pytest.mark.badinput
def test_a_corrupt_skypilot_catalog_is_reported_not_ignored(tmp_path):
    from amigo_burst.planning.pricing import catalog_root, load_prices

    f = catalog_root(tmp_path) / "vast" / "vms.csv"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"\x89PNG\x00\xff garbage")
    table = load_prices(home=tmp_path)
    assert table.sources["vast"].kind == "snapshot" and "is unreadable" in table.sources["vast"].note
    assert f"warning: {f} is unreadable" in table.summary()
    f.write_text("InstanceType,AcceleratorName\nx,\n")  # readable, but no priced GPU row
    assert "has no priced GPU rows" in load_prices(home=tmp_path).summary()


@pytest.mark.badinput
def test_a_malformed_env_line_is_reported_by_number_never_by_content(demo):
    (demo / ".env").write_text("HF_TOKEN=hf_abcdefgh123\nVAST API KEY = sekrit-value\n")
    for args in (("config", "check"), ("launch", "--stage", "1")):
        r = run_cli(demo, *args)
        one_error_line(r, ".env: line 2 not NAME=value")
        assert "sekrit" not in r.output and "hf_abcdefgh123" not in r.output
    assert not (demo / ".amigo").exists()


@pytest.mark.badinput
def test_rehearse_refuses_a_model_that_is_no_model_and_a_second_rehearsal(demo, tmp_path):
    from amigo_burst.lifecycle.rehearsal_record import rehearsal_dir
    from amigo_burst.lifecycle.rehearse_guard import rehearsal_lock

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text('{"model_type": ')
    one_error_line(run_cli(demo, "rehearse", "--model", str(garbage)), "config.json is not valid JSON")
    assert not (rehearsal_dir(demo) / "project").exists(), "nothing trained"
    with rehearsal_lock(rehearsal_dir(demo)):  # a rehearsal running (its lock held)
        one_error_line(run_cli(demo, "rehearse"), "a rehearsal of this project is already running")
    assert not (rehearsal_dir(demo) / "project").exists()


def _sigint_as_a_shell_leaves_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
def test_ctrl_c_during_rehearse_stops_its_stage_and_leaves_nothing_running(demo, tiny_model, tmp_path):
    """Ctrl-C while a rehearsal trains stage 1: exit 130, one message, the stage's worker and training
    process gone (no orphan that makes the next rehearsal say "already running")."""
    from amigo_burst.lifecycle.rehearsal_record import rehearsal_dir

    out = tmp_path / "rehearse.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(cli_argv(demo, "rehearse", "--model", str(tiny_model), "--steps", "30"), cwd=demo,
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_sigint_as_a_shell_leaves_it,
                                env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "AMIGO_FAULT_STEP_DELAY_S": "2"})
    project = rehearsal_dir(demo) / "project"

    def training():
        if not (project / ".amigo" / "state.db").is_file():
            return None
        live = [r for r in records(project).list() if r.status == "RUNNING" and r.child_pid]
        return live[0] if live else None

    run = wait_for(training, "stage 1 training in the rehearsal", timeout=240, proc=proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 130
    text = out.read_text()
    assert "rehearsal interrupted" in text and "Traceback" not in text, text[-2000:]
    end = records(project).get(run.id)
    assert end.status == "STOPPED", end
    assert not pid_alive(end.pid) and not pid_alive(end.child_pid), "nothing left running"
