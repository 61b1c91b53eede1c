"""Validation inside training: a held-out split chosen by content hash (disjoint, stable, sized by
fraction and cap), eval loss during and at the end of training, and the best adapter kept."""

from __future__ import annotations

import json
import random

import pytest
from train_helpers import SAMPLES, argv, metrics, progress_lines, run_inprocess

from train import heldout
from train.schema import stage_spec


@pytest.mark.parametrize(("rows", "fraction", "cap", "expect"), [
    (9, 0.5, 500, 0),  # under 10 rows: none held out
    (10, 0.02, 500, 1),  # 0.2 rounds to 0: at least one
    (100, 0.02, 500, 2),
    (56_025, 0.02, 500, 500),  # 1,120.5 -> capped
    (1000, 0.0, 500, 0),  # validation off
    (1000, 0.5, 0, 0),
])
def test_eval_size(rows, fraction, cap, expect):
    assert heldout.eval_size(rows, fraction, cap) == expect


def _formatted(stage: int, system_prompt: str | None = None) -> list[dict]:
    from train import data

    spec = stage_spec(stage)
    rows = data.read_rows(str(SAMPLES / f"stage{stage}.jsonl"), spec)
    if spec.trainer == "dpo":
        return [data.to_preference(r, system_prompt) for r in rows]
    return [{"messages": data.to_messages(spec, r, system_prompt)} for r in rows]


def _contents(ds) -> set[str]:
    return {json.dumps(ex, sort_keys=True) for ex in ds}


@pytest.mark.parametrize("stage", [1, 5])
def test_split_is_disjoint_and_chosen_by_content_not_position(stage):
    from datasets import Dataset

    rows = _formatted(stage)
    train, evalset, info = heldout.split(Dataset.from_list(rows), 0.1, 500)
    assert info["eval_rows"] == len(evalset) == 3 and info["train_rows"] == len(train) == len(rows) - 3
    assert not _contents(train) & _contents(evalset)
    assert _contents(train) | _contents(evalset) == _contents(rows)

    again = heldout.split(Dataset.from_list(rows), 0.1, 500)[1]  # a re-run
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    moved = heldout.split(Dataset.from_list(shuffled), 0.1, 500)[1]  # the same rows, other positions
    with_system = heldout.split(Dataset.from_list(_formatted(stage, "You write Python.")), 0.1, 500)[1]
    strip = [{k: v for k, v in ex.items()} for ex in with_system]
    assert _contents(again) == _contents(moved) == _contents(evalset)
    assert [heldout.row_key(ex) for ex in strip] == [heldout.row_key(ex) for ex in evalset]  # system prompt aside


def test_a_duplicated_row_never_sits_on_both_sides():
    from datasets import Dataset

    rows = _formatted(1)
    rows = rows + rows  # every row twice
    train, evalset, _ = heldout.split(Dataset.from_list(rows), 0.1, 500)
    assert len(evalset) % 2 == 0 and not _contents(train) & _contents(evalset)


# --- real training on the tiny model --------------------------------------------------------------


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(path)


def _same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rows_with_one_unlike_held_out() -> list[dict]:
    """Nine training rows of one kind and a tenth, unlike them, that the hash split holds out (10 rows at
    2%: exactly the row with the smallest content hash)."""
    from train import data

    spec = stage_spec(1)

    def key(row):
        return heldout.row_key({"messages": data.to_messages(spec, row)})

    rows = [{"instruction": f"Write step {i}.", "code": "\n".join(["total = total + 1"] * 12)} for i in range(9)]
    lowest = min(key(r) for r in rows)
    x = 0
    while key(odd := {"instruction": f"Write check {x}.", "code": "\n".join(["assert flag is None"] * 12)}) > lowest:
        x += 1
    return [*rows, odd]


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_best_or_the_last_adapter_is_kept(tiny_model, tmp_path, keep):
    """A LoRA scale of 128 (alpha 1024 / r 8) at lr 0.1 overshoots: the held-out loss falls, then
    climbs, so the best step is not the last. Every step is evaluated and checkpointed, so adapter/ is
    compared with the Trainer's own copy of that step."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows_with_one_unlike_held_out()))
    out = tmp_path / keep
    assert run_inprocess(argv(1, tiny_model, out, "--set", "learning_rate=0.1", "--set", "lora_alpha=1024",
                              "--set", "max_steps=6", "--set", "eval_fraction=0.02", "--set", "eval_steps=1",
                              "--set", "save_steps=1", "--set", "save_total_limit=10", "--set", f"keep={keep}",
                              data=data)) == 0
    m = metrics(out)
    ev = m["eval_loss"]
    assert m["eval_rows"] == 1 and m["train_rows"] == 9 and ev["evaluations"] == 6
    assert ev["best"] < ev["final"] and ev["best_step"] < 6, ev  # the overshoot the test relies on
    evals = [(p["step"], p["eval_loss"]) for p in progress_lines(out) if "eval_loss" in p]
    assert [s for s, _ in evals] == [1, 2, 3, 4, 5, 6] and min(v for _, v in evals) == ev["best"]
    assert evals[0][1] == ev["first"] and evals[-1][1] == ev["final"]

    adapter = _tensors(out / "adapter" / "adapter_model.safetensors")
    best, last = ev["best_step"], 6
    kept, other = (best, last) if keep == "best" else (last, best)
    assert m["kept"] == {"which": keep, "step": kept, "eval_loss": ev["best"] if keep == "best" else None}
    assert _same(adapter, _tensors(out / "checkpoints" / f"checkpoint-{kept}" / "adapter_model.safetensors"))
    assert not _same(adapter, _tensors(out / "checkpoints" / f"checkpoint-{other}" / "adapter_model.safetensors"))
    assert not (out / "best").exists()  # used, then cleared: a completed run's best is adapter/


@pytest.mark.slow
def test_under_ten_rows_trains_without_validation(tiny_model, tmp_path):
    rows = (SAMPLES / "stage1.jsonl").read_text().splitlines()[:9]
    data = tmp_path / "nine.jsonl"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "o"
    assert run_inprocess(argv(1, tiny_model, out, "--set", "max_steps=2", data=data)) == 0
    m = metrics(out)
    assert m["eval_rows"] == 0 and m["train_rows"] == 9 and m["eval_loss"]["best"] is None
    assert m["kept"]["which"] == "last"


def test_the_progress_bar_shows_the_latest_eval_loss():
    """follow.py's bar fields from AMIGO_PROGRESS lines: an eval line's loss shows, a training line has none
    (follow() keeps the latest one on the bar between evaluations)."""
    from amigo_burst.lifecycle.follow import progress_fields

    ev = progress_fields({"stage": 2, "step": 4, "total": 8, "loss": 2.5, "tokens_per_s": 1234.4, "eta_s": None,
                          "eval_loss": 2.75})
    assert ev == {"stage": 2, "loss": "2.5000", "tps": "1,234", "eval": " (eval 2.7500)"}
    plain = progress_fields({"stage": 2, "step": 5, "total": 8, "loss": None, "tokens_per_s": 10.0})
    assert plain["eval"] == "" and plain["loss"] == "-"
