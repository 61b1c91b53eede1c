"""Over-long rows are cut at the end, never at the head (keep_start everywhere), and a DPO pair always
shows chosen and rejected one identical, whole prompt. keep_end is refused: it cut a stage-4 problem
statement, gave a pair two prompts, and TRL 2 removes it. (Truncation is a last resort: the controller
drops or trims over-long rows first.)"""

from __future__ import annotations

import json
import warnings

import pytest
from train_helpers import REPO, run_inprocess

from train import config

CONFIGS = sorted((REPO / "train" / "configs").glob("*.yaml"))


def _parse(tmp_path, yaml, *extra):
    return config.parse(["--stage", "5", "--config", str(yaml), "--model", str(tmp_path), "--data", "d.jsonl",
                         "--from-base", "--output-dir", str(tmp_path / "o"), *extra])


@pytest.mark.parametrize("yaml", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_keeps_the_start(tmp_path, yaml):
    assert _parse(tmp_path, yaml).truncation_mode == "keep_start"


@pytest.mark.parametrize("yaml", CONFIGS, ids=lambda p: p.name)
def test_no_future_warning_from_our_training_arguments(tmp_path, yaml):
    """What we pass TRL/transformers is current API: no FutureWarning (keep_end, gradient_checkpointing*)."""
    from train import dpo, sft
    from train.session import Session

    cfg = _parse(tmp_path, yaml)
    session = Session(cfg)
    session.restore_signals()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sft.build_sft_config(cfg, session.training_kwargs(evaluate=True), session.choice)
        dpo.build_dpo_config(cfg, session.training_kwargs(evaluate=True))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_keep_end_is_refused_in_one_line(tmp_path, capsys):
    rc = run_inprocess(["--stage", "1", "--model", "hub/never-loaded", "--data", str(tmp_path / "d.jsonl"),
                        "--output-dir", str(tmp_path / "o"), "--set", "truncation_mode=keep_end"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "truncation_mode must be keep_start" in err[0]
    assert not (tmp_path / "o").exists()


# --- what the trainer really sees (real TRL tokenization on the tiny model; no training) ----------


def _trainer(stage: int, tiny_model, tmp_path, rows: list[dict], max_length: int):
    from train import data, dpo, sft
    from train import model as M
    from train.session import Session

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config.parse(["--stage", str(stage), "--config", str(REPO / "train" / "configs" / f"stage{stage}.yaml"),
                        "--model", str(tiny_model), "--data", str(path), "--output-dir", str(tmp_path / "o"),
                        "--from-base", "--set", f"max_length={max_length}", "--set", "eval_fraction=0"])
    dataset = data.load_stage_dataset(cfg.data, cfg.spec)
    session = Session(cfg)
    session.restore_signals()
    tok, _ = M.load_tokenizer(cfg.model)
    model = M.with_adapter(M.load_base_model(cfg.model, cfg.method, session.choice), cfg)
    build = dpo.build_trainer if stage == 5 else sft.build_trainer
    trainer = build(cfg, session, model, tok, dataset)
    session.prepared(trainer, len(dataset), None)
    return trainer, tok, session


LONG_CODE = "\n".join(f"    total = total + values[{i}] * {i}" for i in range(60))


@pytest.mark.slow
def test_a_long_stage4_row_keeps_its_problem_statement(tiny_model, tmp_path):
    row = {"problem": "HEADMARK: read n numbers and print their weighted sum.",
           "reasoning": "Walk the list once.\n" + LONG_CODE, "answer": "print(total)"}
    trainer, tok, _ = _trainer(4, tiny_model, tmp_path, [row], max_length=64)
    ids = trainer.train_dataset[0]["input_ids"]
    assert len(ids) == 64  # cut to max_length ...
    assert "HEADMARK: read n numbers" in tok.decode(ids)  # ... at the end: the problem statement stays


@pytest.mark.slow
def test_dpo_chosen_and_rejected_share_one_whole_prompt(tiny_model, tmp_path):
    pairs = [
        # chosen far longer than max_length, rejected short: cut per side from the end, they used to
        # start at different places of the prompt (keep_end)
        {"prompt": "HEADMARK: write weighted_sum(values) returning the weighted sum.",
         "chosen": "def weighted_sum(values):\n    total = 0\n" + LONG_CODE + "\n    return total",
         "rejected": "def weighted_sum(values):\n    return sum(values)"},
        # a prompt that alone fills max_length: dropped (and counted), never trained on half a prompt
        {"prompt": "HEADMARK: " + " ".join(["explain this long requirement"] * 40),
         "chosen": "ok", "rejected": "no"},
    ]
    trainer, tok, session = _trainer(5, tiny_model, tmp_path, pairs, max_length=64)
    assert len(trainer.train_dataset) == 1
    assert session.trainer_rows == {"train_rows_in": 2, "train_rows_kept": 1}

    ex = trainer.train_dataset[0]
    batch = trainer.data_collator([ex])
    prompt_len = len(ex["prompt_ids"])
    chosen, rejected = batch["input_ids"][0].tolist(), batch["input_ids"][1].tolist()
    c_mask, r_mask = batch["completion_mask"][0].tolist(), batch["completion_mask"][1].tolist()
    assert chosen[:prompt_len] == rejected[:prompt_len] == ex["prompt_ids"]  # one prompt, whole, in both
    assert c_mask[:prompt_len] == r_mask[:prompt_len] == [0] * prompt_len
    assert "HEADMARK: write weighted_sum" in tok.decode(chosen[:prompt_len])
    assert sum(batch["attention_mask"][0].tolist()) == 64  # the long chosen answer lost its end
