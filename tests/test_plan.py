"""plan: stage x target cells, the three strategies, --cloud auto; and the estimate/plan commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amigo_burst.errors import UserError
from amigo_burst.planner import auto_target, estimate_for_target
from amigo_burst.planning.hardware import gpu_table, load_arch
from amigo_burst.planning.matrix import StageInput, TargetInfo, build_plan, choose_target
from amigo_burst.stages import parse_stage_range as parse_stages
from tests.helpers import invoke as _invoke

ROOT = Path(__file__).resolve().parent.parent

TARGETS = [
    TargetInfo("local", "RTX4050", "RTX4050-Laptop", 0.0345, local=True),
    TargetInfo("vast", "RTX4090", "RTX4090", 0.40),
    TargetInfo("runpod", "A100-80GB", "A100-80GB", 1.64),
    TargetInfo("slurm", None, None, None),
]
STAGES = [StageInput(1, "nl2code", "sft", 1024, tokens=5_000_000), StageInput(2, "context", "sft", 4096,
                                                                                tokens=20_000_000),
          StageInput(5, "preference", "dpo", 2048, tokens=4_000_000)]


def test_12b_plan_local_never_fits_and_says_what_would():
    p = build_plan(load_arch("mistral-nemo-12b"), STAGES, TARGETS, gpu_table(), local_target="local",
                   cloud_target="vast")
    local = [c for c in p.cells if c.target == "local"]
    assert local and not any(c.fits for c in local)
    assert "does not fit" in p.local_note and "largest preset" in p.local_note
    strat = {s.name: s for s in p.strategies}
    assert set(strat) == {"all local", "all cloud", "hybrid"}
    assert not strat["all local"].feasible and not strat["hybrid"].feasible  # hybrid puts stage 1 on the laptop
    assert strat["all cloud"].feasible
    assert strat["all cloud"].usd == pytest.approx(sum(c.usd for c in p.cells if c.target == "vast"))
    for _s, (name, why) in p.recommended.items():
        assert name in ("vast", "runpod") and "cheapest" in why and "local" in why


def test_small_model_hybrid_uses_the_laptop_for_stage_1():
    p = build_plan(load_arch("llama-3.2-1b"), STAGES[:1], TARGETS, gpu_table(), local_target="local",
                   cloud_target="vast")
    cell = next(c for c in p.cells if c.target == "local")
    assert cell.fits and cell.micro_batch >= 1 and cell.micro_batch * cell.grad_accum >= 16
    assert p.recommended[1][0] == "local"  # electricity is the cheapest $
    assert p.local_note == ""
    hybrid = next(s for s in p.strategies if s.name == "hybrid")
    assert hybrid.feasible and hybrid.targets == {1: "local"}


def test_method_auto_prefers_lora_where_it_fits():
    # 8B bf16 LoRA at seq 4096 needs > 24 GiB (16 GB of weights + 6.9 GiB of logits): QLoRA on the 4090
    p = build_plan(load_arch("llama-3.1-8b"), STAGES[1:2], TARGETS, gpu_table())
    by = {c.target: c for c in p.cells}
    assert by["runpod"].method == "lora" and by["vast"].method == "qlora" and by["vast"].fits


def test_choose_target_budget_and_deadline():
    arch = load_arch("llama-3.1-8b")
    cells = build_plan(arch, STAGES[1:2], TARGETS, gpu_table()).cells
    name, why = choose_target(cells)
    cheapest = min((c for c in cells if c.fits), key=lambda c: c.usd)
    assert name == cheapest.target and f"${cheapest.usd:.2f}" in why
    fastest = min((c for c in cells if c.fits), key=lambda c: c.hours)
    if fastest.target != cheapest.target:
        name, why = choose_target(cells, deadline_hours=fastest.hours * 1.0001)
        assert name == fastest.target and "deadline" in why
    name, why = choose_target(cells, budget_usd=0.01)
    assert name is None and "budget" in why


def test_parse_stages():
    assert parse_stages("1-5") == [1, 2, 3, 4, 5]
    assert parse_stages("2,4-5") == [2, 4, 5]
    for bad in ("0", "3-9", "x", ""):
        with pytest.raises(UserError):
            parse_stages(bad)


# --------------------------------------------------------------------------- through the CLI


def demo_project(tmp_path: Path) -> Path:
    text = (ROOT / "presets" / "demo.toml").read_text().replace("../train/samples", str(ROOT / "train" / "samples"))
    (tmp_path / "amigo.toml").write_text(text)
    return tmp_path / "amigo.toml"


def invoke(*args):
    return _invoke(*args, env={"HOME": "/nonexistent-home"})


def test_estimate_json_keys():
    r = invoke("estimate", "--model", "llama-3.1-8b", "--gpu", "RTX4090", "--method", "qlora", "--seq-len", "2048",
               "--micro-batch", "1", "--tokens", "10000000", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("fits", "peak_vram_gib", "tokens_per_s", "hours", "usd", "calibrated"):
        assert key in d
    assert d["fits"] is True and d["calibrated"] is False and d["hours"] > 0 and d["usd"] > 0
    r = invoke("estimate", "--model", "gemma-3-12b", "--gpu", "RTX4050-Laptop", "--seq-len", "256", "--json")
    d = json.loads(r.output)
    assert d["fits"] is False and d["hours"] is None and d["usd"] is None


def test_estimate_text_names_the_source_of_figures():
    r = invoke("estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--method", "lora", "--seq-len", "2048",
               "--micro-batch", "4")
    assert r.exit_code == 0, r.output
    assert "fits" in r.output and "[default]" in r.output and "tokens/s" in r.output


@pytest.mark.badinput
@pytest.mark.parametrize("args,msg", [(("--gpu", "TPUv5"), "unknown GPU"), (("--model", "gpt-9"), "unknown model"),
                                      (("--method", "full"), "unknown method")])
def test_estimate_bad_input_one_line_exit_2(args, msg):
    base = {"--model": "llama-3.1-8b", "--gpu": "H100"}
    base.update(dict(zip(args[::2], args[1::2], strict=False)))
    r = invoke("estimate", *[x for kv in base.items() for x in kv])
    assert r.exit_code == 2 and msg in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_plan_command_on_demo_config(tmp_path):
    cfg = demo_project(tmp_path)
    r = invoke("--config", str(cfg), "plan", "--stages", "1-2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert {c["stage"] for c in d["cells"]} == {1, 2}
    assert {s["name"] for s in d["strategies"]} == {"all local", "all cloud", "hybrid"}
    assert d["recommended"]["1"]["target"].startswith("local")
    r = invoke("--config", str(cfg), "plan")
    assert r.exit_code == 0 and "strategies" in r.output and "recommended" in r.output


def test_auto_target_for_launch(tmp_path):
    from amigo_burst.config import load_config

    cfg = load_config(demo_project(tmp_path))
    name, why = auto_target(cfg, 1, [])
    assert name.startswith("local") and "cheapest" in why
    with pytest.raises(UserError, match="no target fits"):
        auto_target(cfg, 1, [], max_usd=0.0)


def test_estimate_for_launch_matches_the_plan_cell(tmp_path):
    from amigo_burst.config import load_config

    cfg = load_config(demo_project(tmp_path))
    d = estimate_for_target(cfg, 1, "vast", tokens=1_000_000).to_record()
    assert d["fits"] and d["method"] == "lora" and d["micro_batch"] == 4 and d["target"] == "vast"
    assert d["usd"] == pytest.approx(d["hours"] * d["usd_per_hour"], rel=1e-3)
    with pytest.raises(UserError, match="no target"):
        estimate_for_target(cfg, 1, "nowhere")
