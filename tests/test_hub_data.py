"""Hub id -> rows over HTTP: `datasets` and huggingface_hub talking to a loopback hub (tests/hub_server.py)
that serves real-shaped repositories of the shipped datasets, and the path where the target, not the
laptop, fetches and prepares a hub dataset (issue 15 item 16) through the local runner.

Subprocesses: HF_ENDPOINT is read when huggingface_hub is imported, so each client starts fresh.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dataset_shapes import write_hub
from tests.helpers import cli, runs_of
from tests.hub_server import FakeHub

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with FakeHub(write_hub(tmp_path_factory.mktemp("hub"))) as h:
        yield h


def env_for(hub: FakeHub, tmp: Path) -> dict:
    import os

    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}


def prepare_cmd(tmp: Path, hub: FakeHub, model: Path, stage: int, source: dict, max_length: int = 4096):
    job = json.dumps({"source": source, "max_length": max_length})
    out = tmp / f"stage{stage}.jsonl"
    r = subprocess.run([sys.executable, "-m", "train.prepare", "--stage", str(stage), "--job", job,
                        "--model", str(model), "--out", str(out)], capture_output=True, text=True,
                       env=env_for(hub, tmp), timeout=600)
    return r, out


def test_hub_datasets_load_as_configured_and_a_loading_script_is_named_in_one_line(tmp_path, hub, tiny_model):
    cols = {"context": "old_contents", "request": "message", "code": "new_contents"}
    r, _ = prepare_cmd(tmp_path, hub, tiny_model, 2, {"hub": "bigcode/commitpackft", "columns": cols})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot load: Dataset scripts are no longer supported, but found commitpackft.py" in r.stderr

    r, out = prepare_cmd(tmp_path, hub, tiny_model, 2, {"hub": "bigcode/commitpackft", "columns": cols,
                                                        "data_files": ["data/python/data.jsonl"], "max_rows": 10})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 10 and all(set(x) == {"context", "request", "code"} for x in rows)
    assert "stage 2 data: 10 rows read, 10 used" in r.stdout or "10 used" in r.stdout

    # a README's configs (data/train-*), list-typed traces; a config + split pair
    r, out = prepare_cmd(tmp_path, hub, tiny_model, 3, {"hub": "JetBrains-Research/mbpp_w_stacktraces",
                                                        "columns": {"buggy_code": "code", "error": "exec_stacktraces",
                                                                    "fixed_code": "solution"}, "max_bad_fraction": 0.8})
    assert r.returncode == 0 and len(out.read_text().splitlines()) == 24, r.stderr[-2000:]
    assert "field 'error' is empty x16 (first: JetBrains-Research/mbpp_w_stacktraces[" in r.stdout
    r, out = prepare_cmd(tmp_path, hub, tiny_model, 4, {"hub": "nvidia/OpenCodeReasoning", "subset": "split_0",
                                                        "split": "split_0", "columns": {"problem": "input",
                                                        "reasoning": "output", "answer": "solution"}}, 8192)
    assert r.returncode == 0 and len(out.read_text().splitlines()) == 39, r.stderr[-2000:]
    assert "over max_seq_len 8192 x1" in r.stdout


def test_a_hub_dataset_is_fetched_and_prepared_by_the_target_not_the_laptop(tmp_path, hub, tiny_model):
    """dataset.prepare = "target": the launch checks a sample here, the target's run.sh prepares the
    whole set with the same code and seed, the store never carries the dataset; both say so."""
    text = (REPO / "amigo.toml").read_text().replace('base = "mistralai/Mistral-Nemo-Base-2407"',
                                                      f'base = "{tiny_model}"')
    text = text.replace('code = "solution" }, max_rows = 75197', 'code = "solution" }, prepare = "target", max_rows = 75197')
    text += "\n[eval]\nlimit = 1\nmax_new_tokens = 16\n"  # the benchmark is not what this test is about
    project = tmp_path / "proj"
    project.mkdir()
    (project / "amigo.toml").write_text(text)
    before = len(hub.requests)
    r = cli(project, "launch", "--stage", "1", "--cloud", "local", "--force",
            env={k: v for k, v in env_for(hub, tmp_path).items() if k.startswith("HF_")}, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    said = " ".join(r.stdout.split())  # the terminal wraps long lines
    assert "dataset: prepared on the target from the hub (ise-uiuc/Magicoder-OSS-Instruct-75K" in said
    assert "checked here on a sample: 39 rows of 40 read" in said
    (run,) = runs_of(project)
    assert run.status == "SUCCEEDED"
    data = run.artifacts["dataset"]
    assert data["where"] == "target" and data["sample_rows"] == 39 and len(data["settings"]) == 64
    log = (project / ".amigo" / "runs" / run.id / "train.log").read_text()
    line = next(x for x in log.splitlines() if x.startswith("AMIGO_DATA "))
    remote = json.loads(line[len("AMIGO_DATA "):])
    assert remote["where"] == "target" and remote["used"] == 39 and remote["sample_matches"] is True
    assert "stage 1 data: 40 rows read, 39 used, 1 dropped (missing field 'code'" in log
    # the laptop sent no dataset: the inputs manifest holds no data.jsonl
    manifests = list((project / ".amigo" / "store" / "manifests").rglob("*.json"))
    inputs = [json.loads(m.read_text()) for m in manifests if "inputs" in str(m)]
    assert inputs and all("data.jsonl" not in m["files"] for m in inputs)
    # the rows were fetched twice over HTTP: the sample here, the whole set on the target
    fetched = [p for m, p in hub.requests[before:] if m == "GET" and p.endswith("decontaminated.jsonl")]
    assert len(fetched) >= 2
