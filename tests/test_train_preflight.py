"""What is checked before the base model loads (one line, exit 2, seconds instead of minutes):
one method per chain of adapters, an adapter that does not fit the base, and the chat template —
a base whose template has no {% generation %} markers (Mistral NeMo's) trains on the fallback."""

from __future__ import annotations

import json
import shutil

import pytest
from train_helpers import SAMPLES, argv, metrics, run_inprocess

from train import config

# Mistral's instruct format, without {% generation %} markers: what Mistral NeMo's tokenizer ships
MISTRAL_LIKE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
# has the markers, but refuses a system turn (Mistral's templates raise on roles they do not know)
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('Only user and assistant "
             "roles are supported!') }}{% elif m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}"
             "{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{% endfor %}")


def _base_with_template(tiny_model, dest, template: str):
    shutil.copytree(tiny_model, dest)
    (dest / "chat_template.jinja").write_text(template)
    return dest


def _fake_adapter(path, meta: dict | None):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    if meta is not None:
        (path / "amigo_adapter.json").write_text(json.dumps(meta))
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """A check that must come first: loading the base at all is the failure."""
    from train import model

    def refuse(*a, **k):
        raise AssertionError("the base model was loaded before the check")

    monkeypatch.setattr(model, "load_base_model", refuse)


# --- one method for the chain -------------------------------------------------------------------


def test_method_contradicting_the_adapters_metadata_is_refused(tmp_path, capsys):
    adapter = _fake_adapter(tmp_path / "a", {"method": "qlora", "quantization": "nf4"})
    rc = run_inprocess(argv(2, "hub/never-loaded", tmp_path / "o", "--adapter-from", str(adapter),
                            "--method", "lora"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "--method lora contradicts" in err[0] and "trained with qlora" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("meta", "flag", "expect"), [
    ({"method": "qlora"}, None, "qlora"),  # no --method: the chain's
    ({"method": "qlora"}, "auto", "qlora"),
    ({"method": "lora"}, "lora", "lora"),
    (None, None, "lora"),  # an adapter made elsewhere: no record, the default
])
def test_the_chain_method_is_the_adapters(tmp_path, meta, flag, expect):
    adapter = _fake_adapter(tmp_path / "a", meta)
    args = ["--stage", "3", "--model", str(tmp_path), "--data", "d.jsonl", "--adapter-from", str(adapter)]
    assert config.parse(args + (["--method", flag] if flag else [])).method == expect


# --- the adapter fits the base --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model, tmp_path_factory):
    """A real stage-1 adapter of the tiny model (hidden 64, 2 layers, vocab 1024), with its metadata."""
    out = tmp_path_factory.mktemp("s1")
    assert run_inprocess(argv(1, tiny_model, out, "--set", "max_steps=1")) == 0
    return out / "adapter"


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "meta", "expect"), [
    ({"hidden": 32}, True, "hidden_size 64 vs 32"),
    ({"hidden": 32}, False, "hidden_size 64 vs 32"),  # no metadata: the tensors' shapes say it
    ({"layers": 1}, False, "num_hidden_layers >= 2 vs 1"),
    ({"layers": 3}, True, "num_hidden_layers 2 vs 3"),
    ({"vocab_size": 512}, True, "vocab_size 1024 vs 512"),
], ids=["hidden", "hidden-no-meta", "fewer-layers", "more-layers", "vocab"])
def test_an_adapter_of_another_base_is_one_line_before_loading(tiny_adapter, tmp_path, capsys, no_model_load,
                                                               shape, meta, expect):
    from train.tiny import write_tiny

    other = write_tiny(tmp_path / "other-base", **shape)
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    if not meta:
        (adapter / "amigo_adapter.json").unlink()
    capsys.readouterr()  # write_tiny's own progress lines
    rc = run_inprocess(argv(2, other, tmp_path / "o", "--adapter-from", str(adapter)))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "does not fit --model" in err[0] and expect in err[0], err[0]
    assert not (tmp_path / "o").exists()


# --- the chat template ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_template_without_generation_markers_gets_the_fallback(tiny_model, tmp_path):
    base = _base_with_template(tiny_model, tmp_path / "mistral-like", MISTRAL_LIKE)
    out = tmp_path / "o"
    assert run_inprocess(argv(1, base, out, "--set", "max_steps=2")) == 0
    m = metrics(out)
    assert m["chat_template"].startswith("fallback: the base's chat template has no {% generation %} markers")
    assert "chat template: the fallback" in (out / "train.log").read_text()
    assert json.loads((out / "adapter" / "amigo_adapter.json").read_text())["chat_template"] == "fallback"
    saved = (out / "adapter" / "chat_template.jinja").read_text()  # the adapter ships the template it learned
    assert "{% generation %}" in saved and "[INST]" not in saved


@pytest.mark.slow
def test_a_template_that_cannot_render_the_stage_is_one_line_before_loading(tiny_model, tmp_path, capsys,
                                                                          no_model_load):
    base = _base_with_template(tiny_model, tmp_path / "no-system", NO_SYSTEM)
    rc = run_inprocess(argv(1, base, tmp_path / "o", "--set", "system_prompt=You write Python."))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "its chat template cannot render stage 1's messages (row 1)" in err[0]
    assert "Only user and assistant roles are supported" in err[0]
    assert not (tmp_path / "o").exists()
    assert SAMPLES.is_dir()
