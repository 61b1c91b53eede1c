"""The rules that make a HumanEval number something to bet on, each on crafted inputs or the tiny model:
the regression stop of `pipeline`, the baseline's settings key and cache, the one model loader's device
rules (a QLoRA merge never dequantizes onto a GPU smaller than the model), and the adapter check.
Only the device query (train.loader.cuda_memory) is faked: there is no GPU here.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from tests.helpers import make_project
from tests.test_humaneval import he_summary


def stage_run(i: int, stage: int, he: dict | None, from_run: str | None = None, base: dict | None = None):
    from amigo_burst.state.records import Run

    metrics = {**({"humaneval": he} if he else {}), **({"humaneval_base": base} if base else {}), "steps": 2}
    return Run(id=f"s{stage}-local-2026010{i}-000000-abc{i}", stage=stage, target="local", status="SUCCEEDED",
               started=f"2026-01-0{i}T00:00:00Z", ended=f"2026-01-0{i}T01:00:00Z", metrics=metrics,
               artifacts={"from_run": from_run} if from_run else {})


def test_regression_line_on_a_crafted_sequence():
    """Pure: stage 3 is held when stage 2 fell below stage 1 beyond the noise; a drop inside the noise, a
    gain, or a partial stage 2 (nothing compared) hold nothing; a margin tolerates a drop."""
    from amigo_burst.lifecycle.pipeline import regression_line
    from amigo_burst.planner import runs_as_dicts
    from amigo_burst.planning.report import build_benchmarks

    def rows(s2: dict):
        r1 = stage_run(1, 1, he_summary(range(60)), base=he_summary(range(40)))
        return build_benchmarks(runs_as_dicts([r1, stage_run(2, 2, s2, from_run=r1.id)]))

    line = regression_line(rows(he_summary(range(30))), 3)  # 60 -> 30 problems
    assert line is not None and line.count("\n") == 0
    assert "stage 3 not launched" in line and "0.183" in line and "stage 1's 0.366" in line and "--force" in line
    assert regression_line(rows(he_summary(range(57))), 3) is None  # 3 problems fewer: noise
    assert regression_line(rows(he_summary(range(80))), 3) is None
    assert regression_line(rows(he_summary(range(5), scored=10, partial=True)), 3) is None
    assert regression_line(rows(he_summary(range(30))), 3, margin=0.5) is None
    assert regression_line(rows(he_summary(range(30))), 2) is None  # stage 1 gained on the base


def test_after_each_stage_the_pipeline_says_the_score_and_its_noise():
    """Pure: the line after a stage: pass@1 with its interval, its change from its parent and from the
    base with theirs, "noise" where the interval holds 0, n/a for a partial run."""
    from amigo_burst.lifecycle.pipeline import score_line
    from amigo_burst.planner import runs_as_dicts
    from amigo_burst.planning.report import build_benchmarks

    r1 = stage_run(1, 1, he_summary(range(60)), base=he_summary(range(40)))
    rows = build_benchmarks(runs_as_dicts([r1, stage_run(2, 2, he_summary(range(57)), from_run=r1.id)]))
    assert score_line(rows, 1) == ("stage 1 HumanEval pass@1 0.366 (95% CI 0.296-0.442, 164 problems); "
                                   "vs the base +0.122 (95% CI +0.072..+0.172)")
    assert score_line(rows, 2) == ("stage 2 HumanEval pass@1 0.348 (95% CI 0.279-0.423, 164 problems); vs its "
                                   "parent -0.018 (95% CI -0.040..+0.003: noise); vs the base +0.104 (95% CI "
                                   "+0.057..+0.151)")
    partial = he_summary(range(5), scored=10, partial=True)
    rows = build_benchmarks(runs_as_dicts([r1, stage_run(2, 2, partial, from_run=r1.id)]))
    assert score_line(rows, 2).endswith("10 problems, partial); vs its parent n/a (partial); vs the base n/a (partial)")


def test_pipeline_holds_the_next_stage_after_a_regression(tmp_path, tiny_model):
    """Stages 1-2 done (crafted records, stage 2 at half of stage 1's pass@1): `pipeline --stages 1-3`
    skips them and launches nothing, in one line with both scores; with stop_on_regression off it goes on
    to launch stage 3 (which stops at once here: the crafted stage 2 has no adapter to continue)."""
    from amigo_burst.config import load_config
    from amigo_burst.errors import UserError
    from amigo_burst.lifecycle.pipeline import PipelineOptions, run_pipeline
    from amigo_burst.state.records import open_records

    project = make_project(tmp_path / "p", tiny_model, eval_limit=164)
    store = open_records(project)
    r1 = store.claim_stage(1, stage_run(1, 1, he_summary(range(60)), base=he_summary(range(40))))
    store.claim_stage(2, stage_run(2, 2, he_summary(range(30)), from_run=r1.id))
    cfg = load_config(project / "amigo.toml")
    buf = io.StringIO()
    results = run_pipeline(cfg, PipelineOptions(plan="local", stages=(1, 2, 3)), Console(file=buf, width=300))
    assert [(s, st) for s, _, st in results] == [(1, "SKIPPED"), (2, "SKIPPED"), (3, "HELD")]
    out = buf.getvalue()
    assert "stage 3 not launched: stage 2's HumanEval pass@1 0.183 fell below stage 1's 0.366" in out
    assert [r.stage for r in store.list()] == [1, 2], "nothing launched"
    text = (project / "amigo.toml").read_text()
    text = re.sub(r"(?m)^(limit = .*)$", "\\1\nstop_on_regression = false", text)
    (project / "amigo.toml").write_text(text)
    with pytest.raises(UserError, match="its outputs are neither"):  # stage 3's launch fetched stage 2's adapter
        run_pipeline(load_config(project / "amigo.toml"), PipelineOptions(plan="local", stages=(1, 2, 3)),
                     Console(file=io.StringIO()))


def test_baseline_key_and_envs(tmp_path):
    """One key per base + benchmark settings; a stage's job is asked to score the base only while no
    complete base score with that key is recorded; [eval] limit = 0 asks for none."""
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.baseline import baseline_envs, eval_key
    from amigo_burst.state.records import open_records

    text = ('[project]\nname = "t"\n[model]\nbase = "x/y"\narch = "tiny"\n[stages.1]\ndataset = { path = "d.jsonl" }\n'
            "[eval]\nlimit = 5\nmax_new_tokens = 64\n")
    def cfg_of(t: str):
        (tmp_path / "amigo.toml").write_text(t)
        return load_config(tmp_path / "amigo.toml")

    cfg = cfg_of(text)
    key = eval_key(cfg, "lora")
    assert len(key) == 12 and key != eval_key(cfg, "qlora")
    assert eval_key(cfg_of(text.replace("limit = 5", "limit = 6")), "lora") != key
    assert baseline_envs(cfg, "lora") == {"AMIGO_EVAL_KEY": key, "AMIGO_EVAL_BASELINE": key}
    partial = {**he_summary(range(1), scored=2, partial=True), "key": key}
    open_records(tmp_path).claim_stage(1, stage_run(1, 1, he_summary(range(2)), base=partial))
    assert baseline_envs(cfg, "lora")["AMIGO_EVAL_BASELINE"] == key, "a partial base score is not the baseline"
    (tmp_path / ".amigo" / "evals" / "eval-s0").mkdir(parents=True)
    (tmp_path / ".amigo" / "evals" / "eval-s0" / "metrics.json").write_text(
        json.dumps({"humaneval": {**he_summary(range(2), scored=5), "key": key, "adapter": None}}))
    assert baseline_envs(cfg, "lora") == {"AMIGO_EVAL_KEY": key, "AMIGO_EVAL_BASELINE": ""}
    assert baseline_envs(cfg_of(text.replace("limit = 5", "limit = 0")), "lora")["AMIGO_EVAL_BASELINE"] == ""


# --- one loader ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params,method,purpose,gpu,expect", [
    (12e9, "qlora", "merge", 6 * 2**30, ("cpu", True)),  # the laptop: 24 GB dequantized never onto 6 GB
    (12e9, "qlora", "merge", 80 * 2**30, ("cuda", True)),  # an 80 GB GPU holds 12e9 x 2 B x 1.2 = 26.8 GiB
    (12e9, "lora", "merge", None, ("cpu", False)),
    (12e9, "lora", "infer", 6 * 2**30, ("cuda", True)),  # try on the laptop: NF4 to fit
    (7e9, "lora", "infer", 80 * 2**30, ("cuda", False)),
    (12e9, "qlora", "infer", 80 * 2**30, ("cuda", True)),  # as QLoRA trained it, whatever the room
    (12e9, "qlora", "infer", None, ("cpu", True)),
])
def test_plan_load_rules(params, method, purpose, gpu, expect):
    from train.loader import plan_load

    plan = plan_load(int(params), method, "auto", purpose, gpu)
    assert (plan.device, plan.nf4) == expect, plan
    if purpose == "merge" and plan.device == "cpu" and gpu:
        assert "exceeds the GPU's 6.0 GiB" in plan.reason


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Three adapters on the tiny model, no training: one whose weights change the model, one untrained
    (LoRA's B at zero), one whose weights match no module (renamed keys: PEFT loads nothing)."""
    import safetensors.torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, init in (("applied", False), ("untrained", True)):
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model)),
                               LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=init,
                                          task_type="CAUSAL_LM"))
        model.save_pretrained(d / name)
        out[name] = d / name
    import shutil

    shutil.copytree(out["applied"], d / "unmatched")
    conf = json.loads((d / "unmatched" / "adapter_config.json").read_text())
    (d / "unmatched" / "adapter_config.json").write_text(json.dumps({**conf, "init_lora_weights": True}))
    f = d / "unmatched" / "adapter_model.safetensors"
    tensors = safetensors.torch.load_file(str(f))
    safetensors.torch.save_file({k.replace("q_proj", "qq_proj").replace("v_proj", "vv_proj"): v
                                 for k, v in tensors.items()}, str(f))
    out["unmatched"] = d / "unmatched"
    return out


def test_a_qlora_merge_on_a_small_gpu_is_placed_on_the_cpu(tiny_model, adapters, monkeypatch):
    """The device says it has a GPU smaller than the model (the only thing faked): export's merge plans and
    runs on the CPU, says why, and hands back plain dequantized weights there."""
    import torch

    from train import loader

    monkeypatch.setattr(loader, "cuda_memory", lambda: 1000)  # a "GPU" of 1000 bytes
    model, plan = loader.load_merged(str(tiny_model), adapters["applied"], "qlora")
    assert plan.device == "cpu" and plan.nf4 and "exceeds the GPU's" in plan.reason
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}, "dequantized: no 4-bit weights left"
    assert not any("lora" in n for n, _ in model.named_parameters())
    monkeypatch.setattr(loader, "cuda_memory", lambda: 2**40)  # one that holds it: the plan takes the GPU
    assert loader.plan_load(loader.param_count(str(tiny_model)), "qlora", purpose="merge",
                            gpu_bytes=loader.cuda_memory()).device == "cuda"


def test_the_adapter_check_refuses_an_adapter_that_is_not_applied(tiny_model, adapters):
    from train import loader
    from train.schema import TrainInputError

    model, tok, _ = loader.load(str(tiny_model), adapters["applied"])
    assert loader.require_applied(model, tok) > 0
    for name in ("untrained", "unmatched"):
        model, tok, _ = loader.load(str(tiny_model), adapters[name])
        assert loader.adapter_effect(model, tok) == 0.0
        with pytest.raises(TrainInputError, match="does not change the model's output"):
            loader.require_applied(model, tok)


def test_the_benchmark_refuses_to_score_an_adapter_that_is_not_applied(tiny_model, adapters):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "train.humaneval", "--model", str(tiny_model), "--adapter",
                        str(adapters["unmatched"]), "--limit", "1", "--max-new-tokens", "4"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "refusing to score the base as the stage" in r.stderr
    assert "matched no module of the base" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_prompt_style_comes_from_the_tokenizer(tiny_model, tmp_path):
    """A tokenizer with a chat template: chat; without one: plain completion; the training fallback
    gives a base without one the template its stages trained through."""
    import shutil

    from train.loader import load_tokenizer

    tok, template = load_tokenizer(str(tiny_model))
    assert template == "base" and tok.chat_template
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    tok, template = load_tokenizer(str(bare))
    assert template is None and not tok.chat_template
    tok, template = load_tokenizer(str(bare), training_template=True)
    assert template == "fallback" and tok.chat_template
