"""Data as real datasets are: the shipped amigo.toml's column maps and filters over real-shaped rows.

Fast: local copies of the five datasets (tests/dataset_shapes.py: the hub's files, columns and
types, with their awkward rows), the shared preparation code in process, the tiny tokenizer.
The hub path itself (hub id -> rows over HTTP) is tests/test_hub_data.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amigo_burst.config import load_config
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.prepare import prepare_stage
from amigo_burst.stages import get_stage
from tests.dataset_shapes import commitpack_rows, shipped_with_local_data, write_hub
from train.formats import TRIM_MARK, to_messages
from train.prepare import load_tokenizer, seq_lengths

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    return write_hub(tmp_path_factory.mktemp("hub"))


def shipped(tmp_path: Path, hub_root: Path, edit=lambda t: t):
    """The shipped amigo.toml with local copies of its datasets (and an optional further edit)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "amigo.toml").write_text(edit(shipped_with_local_data((REPO / "amigo.toml").read_text(), hub_root)))
    return load_config(tmp_path / "amigo.toml")


def rows(p) -> list[dict]:
    return [json.loads(line) for line in p.path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(str(tiny_model))


def test_passing_attempts_are_skipped_and_counted_and_traces_joined_once(tmp_path, hub_root):
    """mbpp_w_stacktraces: exec_stacktraces is a list per test, empty for a passing attempt."""
    p = prepare_stage(shipped(tmp_path, hub_root), get_stage(3), tmp_path / "prep")
    src = hub_root / "JetBrains-Research/mbpp_w_stacktraces/data/train-00000-of-00001.parquet"
    # 40 attempts, 16 passing (i % 5 in 0, 3): skipped with their reason and the first one's row
    assert (p.tally.read, p.rows) == (40, 24)
    count, first = p.tally.unusable["field 'error' is empty"]
    assert count == 16 and first.startswith(f"{src}:")
    out = rows(p)
    assert all(r["error"].count("Traceback") == 1 for r in out), "three identical traces become one"
    assert all(r["buggy_code"] != r["fixed_code"] for r in out)


def test_more_unusable_rows_than_allowed_fail_in_one_line_naming_reason_count_and_first(tmp_path, hub_root):
    cfg = shipped(tmp_path, hub_root, lambda t: t.replace("max_bad_fraction = 0.8", "max_bad_fraction = 0.3"))
    with pytest.raises(UserError) as e:
        prepare_stage(cfg, get_stage(3), tmp_path / "prep")
    msg = str(e.value)
    assert "\n" not in msg
    assert "16 of 40 rows unusable (40%, more than dataset.max_bad_fraction 0.3)" in msg
    assert "field 'error' is empty x16 (first: " in msg and "train-00000-of-00001.parquet:" in msg
    assert not (tmp_path / "prep").exists(), "nothing half-written"


def test_a_wrong_column_fails_the_stage_instead_of_training_on_nothing(tmp_path, hub_root):
    cfg = shipped(tmp_path, hub_root, lambda t: t.replace('error = "exec_stacktraces"', 'error = "stacktraces"'))
    # the parquet file's header says at once which mapped column is not there, and what it has (issue 25)
    with pytest.raises(UserError, match=r"column 'stacktraces' \(dataset.columns\) not in the file; its columns: "
                                        r".*exec_stacktraces"):
        prepare_stage(cfg, get_stage(3), tmp_path / "prep")


def test_a_row_missing_a_field_is_skipped_not_fatal(tmp_path, hub_root):
    p = prepare_stage(shipped(tmp_path, hub_root), get_stage(5), tmp_path / "prep")
    assert (p.tally.read, p.rows) == (40, 39)
    assert list(p.tally.unusable) == ["missing field 'rejected'"]


def test_licence_filter_keeps_the_listed_licences_and_reports_the_rest(tmp_path, hub_root):
    p = prepare_stage(shipped(tmp_path, hub_root), get_stage(2), tmp_path / "prep")
    # every 5th commit is mpl-2.0, not in amigo.toml's list: filtered (a choice), not unusable
    assert p.tally.filtered["licence not in dataset.licenses"][0] == 8 and not p.tally.unusable
    assert p.rows == 32


def test_max_rows_is_a_seeded_shuffle_not_the_first_rows(tmp_path, hub_root):
    def pick(seed: int, n: int = 6) -> list[str]:
        cfg = shipped(tmp_path / f"s{seed}", hub_root,
                      lambda t: t.replace("max_rows = 75197", f"max_rows = {n}, seed = {seed}"))
        return [r["instruction"] for r in rows(prepare_stage(cfg, get_stage(1), tmp_path / f"p{seed}"))]

    first = pick(0)
    assert len(first) == 6 and first == pick(0), "the same seed draws the same rows"
    in_order = [json.loads(x)["problem"] for x in
                (hub_root / "ise-uiuc/Magicoder-OSS-Instruct-75K/data-oss_instruct-decontaminated.jsonl")
                .read_text().splitlines()[:6]]
    assert first != in_order, "not the first N"
    assert pick(1) != first, "another seed, other rows"


def test_parquet_max_rows_is_seeded_too(tmp_path, hub_root):
    def pick(seed):
        cfg = shipped(tmp_path / f"s{seed}", hub_root,
                      lambda t: t.replace("max_rows = 50000", f"max_rows = 5, seed = {seed}"))
        return [r["problem"] for r in rows(prepare_stage(cfg, get_stage(4), tmp_path / f"p{seed}"))]

    assert pick(3) == pick(3) != pick(4)


def test_over_long_rows_are_dropped_with_their_length_and_counted_as_the_trainer_sees_them(tmp_path, hub_root, tok):
    p = prepare_stage(shipped(tmp_path, hub_root), get_stage(4), tmp_path / "prep", tok)
    count, first = p.tally.filtered["over max_seq_len 8192"]
    assert count == 1 and "tokens)" in first
    assert p.rows == 39 and p.tally.longest <= 8192
    # tokens: the chat-templated length of every row kept, the trainer's formatting
    assert p.tally.tokens == sum(sum(seq_lengths(tok, get_stage(4), r)) for r in rows(p))


def test_long_context_is_trimmed_from_the_context_side_only(tmp_path, hub_root, tok):
    p = prepare_stage(shipped(tmp_path, hub_root), get_stage(2), tmp_path / "prep", tok)
    assert p.tally.trimmed[0] == 1 and "data.jsonl:6" in p.tally.trimmed[1]
    trimmed = next(r for r in rows(p) if TRIM_MARK in r["context"])
    assert trimmed["context"].startswith("CONSTANT_0 = 0"), "stage 2 keeps the head of the old file"
    assert trimmed["code"] == commitpack_rows()[5]["new_contents"], "the answer (the new file) is whole"
    assert max(seq_lengths(tok, get_stage(2), trimmed)) <= 4096


def test_stage3_error_is_trimmed_keeping_its_end(tmp_path, tok):
    trace = "".join(f'  File "lib.py", line {i}, in f{i}\n' for i in range(4000)) + "ZeroDivisionError: division by zero"
    (tmp_path / "d.jsonl").write_text(json.dumps({"buggy_code": "x = 1 / 0", "error": trace, "fixed_code": "x = 0"}) + "\n")
    (tmp_path / "amigo.toml").write_text('[project]\nname = "x"\n[model]\nbase = "b"\narch = "tiny"\n'
                                         '[stages.3]\ndataset = { path = "d.jsonl" }\nmax_seq_len = 512\n')
    p = prepare_stage(load_config(tmp_path / "amigo.toml"), get_stage(3), tmp_path / "prep", tok)
    (row,) = rows(p)
    assert row["error"].startswith(TRIM_MARK) and row["error"].endswith("ZeroDivisionError: division by zero")
    assert max(seq_lengths(tok, get_stage(3), row)) <= 512


def test_stage3_asks_for_an_explanation_only_when_the_row_has_one():
    spec = get_stage(3)
    row = {"buggy_code": "x = 1 / 0", "error": "ZeroDivisionError", "fixed_code": "x = 0"}
    plain = to_messages(spec, row)
    assert plain[0]["content"].endswith("Fix it.") and "explain" not in plain[0]["content"]
    explained = to_messages(spec, {**row, "explanation": "Division by zero."})
    assert explained[0]["content"].endswith("Fix it and explain the bug.")
    assert explained[1]["content"].endswith("Division by zero.")


def test_broken_lines_are_unusable_rows_not_a_crash(tmp_path):
    good = json.dumps({"instruction": "x", "code": "y"}).encode() + b"\n"
    (tmp_path / "d.jsonl").write_bytes(good * 3 + b'{"instruction": "x", "code": \n' + b'{"instruction": "caf\xe9"}\n')
    (tmp_path / "amigo.toml").write_text('[project]\nname = "x"\n[model]\nbase = "b"\narch = "tiny"\n'
                                         '[stages.1]\ndataset = { path = "d.jsonl" }\n')
    p = prepare_stage(load_config(tmp_path / "amigo.toml"), get_stage(1), tmp_path / "prep")
    assert p.rows == 3
    assert set(p.tally.unusable) == {"invalid JSON (Expecting value)", "not UTF-8"}
    assert p.tally.unusable["not UTF-8"][1].endswith("d.jsonl:5")


@pytest.mark.slow
def test_token_counts_are_what_trl_tokenizes(tmp_path, hub_root, tiny_model, tok):
    """The lengths prepare checks against max_seq_len are the lengths SFTTrainer builds from the rows."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from train.formats import to_example

    cfg = shipped(tmp_path, hub_root)
    examples, expected = [], []
    for n in (1, 2, 3, 4):
        for r in rows(prepare_stage(cfg, get_stage(n), tmp_path / f"p{n}", tok))[:5]:
            examples.append(to_example(get_stage(n), r))
            expected.append(seq_lengths(tok, get_stage(n), r)[0])
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_length=None, packing=False, report_to="none",
                     assistant_only_loss=True, use_cpu=True, dataset_num_proc=None)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args,
                         train_dataset=Dataset.from_list(examples), processing_class=tok)
    assert [len(x) for x in trainer.train_dataset["input_ids"]] == expected


def test_a_launch_counts_tokens_with_the_base_tokenizer_not_a_byte_estimate(tmp_path, tiny_model):
    """The controller's loader falls back to a byte estimate only when the tokenizer cannot be had: a
    local base folder always gives the real tokenizer (a bug in the loader once made every launch
    estimate silently, without the length checks)."""
    from amigo_burst.lifecycle.prepare import load_tokenizer as controller_tokenizer
    from tests.helpers import make_project

    cfg = load_config(make_project(tmp_path / "p", tiny_model) / "amigo.toml")
    tok = controller_tokenizer(cfg)
    assert tok is not None and tok.chat_template
    p = prepare_stage(cfg, get_stage(1), tmp_path / "prep", tok)
    assert p.tokens_exact and p.tally.exact
