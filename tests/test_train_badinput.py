"""Bad input to `python -m train`: one line on stderr naming the problem, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
from train_helpers import SAMPLES, argv, run_inprocess, run_subprocess

pytestmark = pytest.mark.badinput

GOOD = {"instruction": "Write add(a, b).", "code": "def add(a, b):\n    return a + b"}


def _data(tmp_path, lines: list[str]):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad_line", "expect"),
    [
        (json.dumps({"instruction": "Write add."}), "missing field 'code'"),
        (json.dumps({"instruction": "   ", "code": "pass"}), "field 'instruction' is empty"),
        (json.dumps({"instruction": "Write add.", "code": 42}), "field 'code' must be a string, got int"),
        ('{"instruction": "Write add.", "code": ', "invalid JSON"),
        (json.dumps(["instruction", "code"]), "expected a JSON object"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, capsys, bad_line, expect):
    data = _data(tmp_path, [json.dumps(GOOD), json.dumps(GOOD), bad_line])
    out = tmp_path / "out"
    assert run_inprocess(argv(1, "hub/never-loaded", out, data=data)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {data}:3: ") and expect in err[0]
    assert not out.exists()  # validated before anything is created


def test_dpo_row_missing_rejected(tmp_path, capsys):
    data = _data(tmp_path, [json.dumps({"prompt": "p", "chosen": "c"})])
    assert run_inprocess(argv(5, "hub/never-loaded", tmp_path / "o", "--from-base", data=data)) == 2
    assert f"{data}:1: missing field 'rejected'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--stage", "9"], "unknown stage '9'"),
        (["--set", "lora_rank=8"], "unknown config key 'lora_rank'"),
        (["--set", "max_steps=many"], "config key 'max_steps' must be a number"),
        (["--set", "packing=maybe"], "packing must be auto, true or false"),
        (["--resume", "/nonexistent/checkpoint-3"], "no such checkpoint dir"),
    ],
)
def test_bad_arguments(tmp_path, capsys, extra, expect):
    args = argv(1, "hub/never-loaded", tmp_path / "o") + extra
    assert run_inprocess(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0]


def test_stage_above_1_needs_previous_adapter(tmp_path, capsys):
    assert run_inprocess(argv(3, "hub/never-loaded", tmp_path / "o")) == 2
    assert "--adapter-from" in capsys.readouterr().err
    assert run_inprocess(argv(3, "hub/never-loaded", tmp_path / "o", "--adapter-from", str(tmp_path))) == 2
    assert "not a PEFT adapter dir" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_dataset_file(tmp_path, capsys):
    assert run_inprocess(argv(1, "hub/never-loaded", tmp_path / "o", data=tmp_path / "nope.jsonl")) == 2
    assert "nope.jsonl: no such dataset file" in capsys.readouterr().err


@pytest.mark.slow
def test_real_process_exit_code_and_one_line(tmp_path):
    """The same through `python -m train`: exit status 2, exactly one stderr line, no traceback."""
    data = _data(tmp_path, [json.dumps(GOOD), json.dumps({"instruction": "x", "code": ""})])
    p = run_subprocess(argv(1, "hub/never-loaded", tmp_path / "o", data=data))
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [f"error: {data}:2: field 'code' is empty (stage 1 nl2code needs instruction, code)"]
    assert "Traceback" not in p.stderr
    assert SAMPLES.is_dir()
