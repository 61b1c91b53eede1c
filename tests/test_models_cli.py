"""`amigo-burst eval | try | export` on a project whose stage 1 ran (the real CLI as a subprocess, the
tiny model trained by the local target's worker), and their bad input: one line, exit 2, nothing written.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli, cli_argv, invoke, make_project, records, runs_of, wait_for


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model) -> Path:
    p = make_project(tmp_path_factory.mktemp("models") / "proj", tiny_model)
    cli(p, "launch", "--stage", "1", check=True, timeout=900)
    return p


def one_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json prints one line on stdout, got {lines}"
    return json.loads(lines[0])


@pytest.mark.slow
def test_eval_here_json(project):
    r = cli(project, "eval", "--stage", "1", "--limit", "2", "--max-new-tokens", "16", "--json", check=True)
    res = one_json(r.stdout)
    assert tuple(res)[:5] == ("stage", "benchmark", "problems", "passed", "pass_at_1")
    assert (res["stage"], res["benchmark"], res["problems"], res["where"]) == (1, "humaneval", 2, "here")
    assert res["run"] == runs_of(project)[0].id and res["device"] == "cpu" and res["method"] == "lora"
    assert res["prompt"] == "chat" and res["template"] == "adapter" and res["adapter_effect"] > 0
    assert res["key"] and res["sandbox"]["seccomp"] is True and res["partial"] is False
    d = project / ".amigo" / "evals" / res["eval_id"]
    assert json.loads((d / "metrics.json").read_text())["humaneval"]["problems"] == 2
    assert len((d / "humaneval.jsonl").read_text().splitlines()) == 2
    assert "humaneval: 2/2 problems" in r.stderr  # progress goes to stderr with --json


@pytest.mark.slow
def test_eval_stage_0_scores_the_base_as_its_stages_are_prompted(project):
    """The baseline on demand: the base alone, the chat template its stages train through, the settings
    key a stage's score is matched by; `report` shows it as stage 0."""
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.baseline import eval_key

    r = cli(project, "eval", "--stage", "0", "--limit", "1", "--max-new-tokens", "4", "--json", check=True)
    res = one_json(r.stdout)
    assert (res["stage"], res["run"], res["adapter"], res["problems"], res["prompt"]) == (0, None, None, 1, "chat")
    cfg = load_config(project / "amigo.toml")
    want = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"limit": 1, "max_new_tokens": 4})})
    assert res["key"] == eval_key(want, "lora") and res["adapter_effect"] is None
    rep = json.loads(cli(project, "report", "--format", "json", check=True).stdout)
    assert [(b["stage"], b["id"], b["problems"]) for b in rep["benchmarks"]] == [(0, "base", 1)]


@pytest.mark.slow
def test_eval_on_the_local_target_runs_the_benchmark_alone_through_run_sh(project):
    r = cli(project, "eval", "--stage", "1", "--limit", "1", "--max-new-tokens", "8", "--cloud", "local", "--json",
            check=True)
    res = one_json(r.stdout)
    assert res["where"] == "local-rtx4050" and res["problems"] == 1 and res["stage"] == 1
    log = (project / ".amigo" / "evals" / res["eval_id"] / "eval.log").read_text()
    assert "setup: training stack present" in log  # the target YAML's setup ran, then run.sh
    assert "AMIGO_PROGRESS" not in log, "the benchmark alone: no training"
    assert res["adapter"] == "inputs/adapter", "the adapter travelled like a launch's inputs (the store)"
    # a run of its own, handed to the worker like a stage (record, log, outputs), never the stage's run
    from amigo_burst.state.records import open_records

    store = open_records(project)
    ev = store.get(res["eval_id"].removeprefix("eval-"))
    assert ev.status == "SUCCEEDED" and ev.artifacts["eval"] == {"of": res["run"]} and ev.pid
    assert ev.metrics["humaneval"]["problems"] == 1 and store.latest(1).id == res["run"]
    assert json.loads((project / ".amigo" / "runs" / ev.id / "launch.json").read_text())["envs"]["AMIGO_TASK"] == "eval"


@pytest.mark.slow
def test_try_streams_the_stage_model_through_its_chat_template(project, tiny_model):
    import torch

    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.models import chat_ids, load, stage_model, try_prompt

    cfg = load_config(project / "amigo.toml")
    sm = stage_model(cfg, 1)

    class Chunks(io.StringIO):
        writes = 0

        def write(self, s):
            Chunks.writes += 1
            return super().write(s)

    out = Chunks()
    text = try_prompt(cfg, sm, "Write a function that reverses a string", max_new_tokens=24, out=out)
    assert out.getvalue().rstrip("\n") == text and Chunks.writes >= 2, "streamed in pieces, as generated"
    model, tok, _ = load(cfg, sm)
    enc = chat_ids(tok, "Write a function that reverses a string")
    assert enc["input_ids"][0, 0].item() == tok.bos_token_id and (enc["input_ids"] == tok.bos_token_id).sum() == 1
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True) == text
    r = cli(project, "try", "--stage", "1", "def add(a, b):", "--max-new-tokens", "4", check=True)
    assert r.stdout.splitlines()[0].startswith(f"stage 1 ({sm.run.id})")


@pytest.mark.slow
def test_export_all_three_formats(project, tmp_path):
    """gguf and ollama are checked against the merged model (--check N; --no-check skips it): llama.cpp and
    transformers answer the same HumanEval problems with the Modelfile's stop tokens, both are scored."""
    for fmt, out, extra in (("merged", tmp_path / "merged", ()), ("gguf", tmp_path / "a.gguf", ("--no-check",)),
                            ("ollama", tmp_path / "oll", ("--check", "2"))):
        r = cli(project, "export", "--stage", "1", "--format", fmt, "--out", str(out), *extra, check=True, timeout=900)
        assert f"{fmt}: {out}" in r.stdout
        assert ("parity (" in r.stdout) == (fmt == "ollama"), r.stdout
    assert (tmp_path / "merged" / "model.safetensors").is_file() and (tmp_path / "merged" / "chat_template.jinja").is_file()
    assert (tmp_path / "a.gguf").read_bytes()[:4] == b"GGUF"
    assert (tmp_path / "oll" / "model.gguf").is_file()
    modelfile = (tmp_path / "oll" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\nTEMPLATE \"\"\"")
    par = json.loads((tmp_path / "oll" / "parity.json").read_text())
    assert par["problems"] == 2 and len(par["answers"]) == 2 and 0 <= par["differ"] <= 2
    assert [f'PARAMETER stop "{s}"' for s in par["stops"]] == [ln for ln in modelfile.splitlines() if "stop" in ln]
    for side in ("merged", "gguf"):
        assert par[side]["pass_at_1"] == par[side]["passed"] / 2
    assert all(a["gguf"].strip() for a in par["answers"]), "llama.cpp answered"
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("parity ("))
    assert f"llama.cpp pass@1 {par['gguf']['pass_at_1']:.3f}, merged model {par['merged']['pass_at_1']:.3f}" in line
    assert f"{par['differ']} of 2 answers differ" in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder left beside --out"
    r = cli(project, "export", "--stage", "1", "--format", "merged", "--out", str(tmp_path / "merged"))
    assert r.returncode == 2 and "exists" in r.stderr and r.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("args,msg", [
    (("eval", "--stage", "3"), "no successful stage 3 run"),
    (("eval", "--stage", "1", "--limit", "0"), "--limit 0"),
    (("eval", "--stage", "1", "--cloud", "nowhere"), "unknown target 'nowhere'"),
    (("eval", "--stage", "0", "--cloud", "local"), "--stage 0 (the base) is scored here"),
    (("export", "--stage", "1", "--format", "gguf", "--out", "a.gguf", "--check", "200"), "--check 200"),
    (("try", "--stage", "9", "hi"), "unknown stage"),
    (("export", "--stage", "1", "--format", "zip", "--out", "x"), "--format zip"),
    (("export", "--stage", "1", "--format", "gguf", "--out", "model.bin"), "*.gguf"),
    (("export", "--stage", "1", "--format", "merged", "--out", "m", "--quant", "Q3"), "--quant Q3"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, msg):
    p = make_project(tmp_path / "proj", Path("/nonexistent/tiny"))
    r = invoke("--config", str(p / "amigo.toml"), *args)
    assert r.exit_code == 2, r.output
    assert msg in r.output and r.output.strip().count("\n") == 0
    assert not (p / ".amigo" / "evals").exists() and not (tmp_path / "proj" / "x").exists()


def _sigint_as_a_shell_leaves_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
def test_ctrl_c_early_in_eval_leaves_no_folder_and_no_benchmark(project, tmp_path):
    """Issue 25 item 11: Ctrl-C as the benchmark starts: exit 130, the benchmark process (its own session:
    the terminal's SIGINT does not reach it) stopped, no .amigo/evals/<id>/ holding only a log."""
    out = tmp_path / "eval.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(cli_argv(project, "eval", "--stage", "1", "--limit", "3"), cwd=project, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_sigint_as_a_shell_leaves_it,
                                env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1"})
    evals = project / ".amigo" / "evals"
    before = set(evals.iterdir()) if evals.is_dir() else set()
    log = wait_for(lambda: next((d / "eval.log" for d in evals.glob("*") if d not in before and
                                 (d / "eval.log").is_file()), None) if evals.is_dir() else None,
                   "the evaluation's log", timeout=120, proc=proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, out.read_text()[-2000:]
    assert not log.parent.exists(), "no folder with only a log"
    bench = subprocess.run(["pgrep", "-f", f"train.humaneval.*{log.parent.name}"], capture_output=True, text=True)
    assert not bench.stdout.strip(), "the benchmark process was stopped"
    assert "Traceback" not in out.read_text()


@pytest.mark.slow
def test_try_names_the_base_it_loads_after_the_project_moved(project, tmp_path, tiny_model):
    """Issue 25 item 11: the folder the run trained against is gone (the project moved with its model):
    `try` loads amigo.toml's base and names that one, not the recorded path."""
    moved = tmp_path / "moved"
    shutil.copytree(project, moved)
    runs = records(moved)
    run = runs.list()[0]
    runs.update(run.id, metrics={**run.metrics, "base_model": str(tmp_path / "old-place" / "tiny-model")})
    r = invoke("--config", str(moved / "amigo.toml"), "try", "--stage", "1", "def f():", "--max-new-tokens", "2",
               env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[0]
    assert first == f"stage 1 ({run.id}) on {tiny_model}", first

