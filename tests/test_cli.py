"""The CLI through typer's CliRunner: tables render, bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import invoke

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("stages", "targets", "doctor", "config", "launch", "logs", "status", "download", "down", "pipeline"):
        assert cmd in r.output


def test_stages_table():
    r = invoke("stages")
    assert r.exit_code == 0
    for name in ("nl2code", "context", "debugging", "reasoning", "preference", "DPO", "[explanation]"):
        assert name in r.output


def test_targets_table_reads_sky_yamls():
    r = invoke("--config", str(ROOT / "amigo.toml"), "targets")
    assert r.exit_code == 0, r.output
    for name in ("local-rtx4050", "runpod", "vast", "lambda-a100", "slurm", "A100-80GB", "RTX4090", "6 GiB"):
        assert name in r.output


def test_config_check_masks_secrets(tmp_path, tiny_model):
    cfg = tmp_path / "amigo.toml"  # a real base model: `config check` finds it (issue 25 item 4)
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text().replace('"tiny-model"', f'"{tiny_model}"'))
    (tmp_path / ".env").write_text("HF_TOKEN=hf_SECRETSECRETSECRET123\n")
    r = invoke("--config", str(cfg), "config", "check")
    assert r.exit_code == 0, r.output
    assert "is valid" in r.output and "HF_TOKEN=****" in r.output
    assert "hf_SECRETSECRETSECRET123" not in r.output


@pytest.mark.badinput
@pytest.mark.parametrize("stage", ["0", "6", "two"])
def test_bad_stage_is_one_line_exit_2(stage, tmp_path):
    cfg = tmp_path / "amigo.toml"
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text())
    before = sorted(tmp_path.rglob("*"))
    r = invoke("--config", str(cfg), "launch", "--stage", stage)
    assert r.exit_code == 2
    assert "unknown stage" in r.output and len(r.output.strip().splitlines()) == 1
    assert "Traceback" not in r.output
    assert sorted(tmp_path.rglob("*")) == before, "nothing written"


@pytest.mark.badinput
def test_unknown_target_is_one_line(tmp_path):
    cfg = tmp_path / "amigo.toml"
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text())
    r = invoke("--config", str(cfg), "launch", "--stage", "1", "--cloud", "azure-moon")
    assert r.exit_code == 2
    assert "unknown target 'azure-moon'" in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.badinput
def test_broken_config_via_cli(tmp_path):
    cfg = tmp_path / "amigo.toml"
    cfg.write_text("[project\n")
    r = invoke("--config", str(cfg), "config", "check")
    assert r.exit_code == 2 and "TOML syntax error" in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.badinput
def test_sky_yaml_syntax_error_names_file(tmp_path):
    cfg = tmp_path / "amigo.toml"
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text())
    (tmp_path / "sky").mkdir()
    (tmp_path / "sky" / "broken.yaml").write_text("resources: [\n")
    r = invoke("--config", str(cfg), "targets")
    assert r.exit_code == 2
    assert "broken.yaml" in r.output and "YAML syntax error" in r.output


@pytest.mark.badinput
def test_sky_yaml_missing_field_names_field(tmp_path):
    cfg = tmp_path / "amigo.toml"
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text())
    (tmp_path / "sky").mkdir()
    (tmp_path / "sky" / "nope.yaml").write_text("resources: {infra: vast}\nenvs: {}\nsetup: echo\n")
    r = invoke("--config", str(cfg), "targets")
    assert r.exit_code == 2 and "nope.yaml: missing field 'run'" in r.output


def test_config_after_the_command_too(tmp_path, tiny_model):
    """README: every command takes --config; after the command's name as well as before it."""
    cfg = tmp_path / "amigo.toml"
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text().replace('"tiny-model"', f'"{tiny_model}"'))
    for args in (("--config", str(cfg), "config", "check"), ("config", "check", "--config", str(cfg)),
                 ("config", "check", f"--config={cfg}"), ("config", "check", "-c", str(cfg))):
        r = invoke(*args)
        assert r.exit_code == 0 and f"{cfg} is valid" in r.output, (args, r.output)


def test_estimate_tokens_as_the_readme_writes_them():
    """`--tokens 50e6` (the README's example), 50M and 50_000_000 are the same count."""
    import json

    outs = set()
    for tokens in ("50e6", "50M", "50_000_000", "50000000"):
        r = invoke("estimate", "--model", "llama-3.1-8b", "--gpu", "RTX4090", "--tokens", tokens, "--json")
        assert r.exit_code == 0, (tokens, r.output)
        outs.add(json.dumps({k: v for k, v in json.loads(r.output).items() if k != "calibration"}, sort_keys=True))
    assert len(outs) == 1
