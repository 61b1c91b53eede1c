""".env values never reach logs, run records, reports, the store, synced workdirs (issue 7, "Secrets").

A project gets recognisable fake secrets in .env; its target prints them (as a careless setup script
would) and one run fails with a secret in its error line. Then every byte the tool wrote — .amigo/
(state DB, logs, launch.json, work dirs, the store), and the output of launch, status, logs, report
(every format) and config check — is searched for each value. The workdir bundle is also checked to
leave out `.env*`, `*.pem`, `*credentials*` and `.git` even when they sit inside train/.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import cli as _cli
from tests.helpers import make_project

REPO = Path(__file__).resolve().parents[1]
SECRETS = {
    "HF_TOKEN": "hf_FAKEsecretTOKEN_amigo_7e1f0c",
    "WANDB_API_KEY": "wandbFAKEkey0123456789abcdef_amigo",
    "AWS_SECRET_ACCESS_KEY": "awsFAKEsecret/+amigo=Zx9",
    "VAST_API_KEY": "vastFAKEkey_amigo_5150",
}


def cli(project: Path, *args: str, timeout: int = 600):
    """The CLI with none of the fake secrets in its environment: they may reach it only through .env."""
    return _cli(project, *args, timeout=timeout, drop_env=tuple(SECRETS))


def leaks(blob: bytes) -> list[str]:
    return [name for name, value in SECRETS.items() if value.encode() in blob]


def leaky_target(project: Path) -> None:
    """sky/local-rtx4050.yaml whose run prints every secret first; sky/local-broken.yaml fails with one."""
    (project / "sky").mkdir()
    y = (REPO / "sky" / "local-rtx4050.yaml").read_text()
    echo = "".join(f'  echo "debug {k}=${k}"\n' for k in SECRETS)
    (project / "sky" / "local-rtx4050.yaml").write_text(y.replace("run: |\n", "run: |\n" + echo, 1))
    broken = y.replace("name: amigo-local", "name: amigo-local-broken").replace(
        "run: |\n  bash train/capped.sh run bash train/run.sh", 'run: |\n  echo "error: auth failed for token $HF_TOKEN"\n  exit 1')
    (project / "sky" / "local-broken.yaml").write_text(broken)
    # two local targets: the alias "local" no longer names one, so the config names its target
    toml = project / "amigo.toml"
    toml.write_text(re.sub(r'(?m)^(cloud|local) = "local"', r'\1 = "local-rtx4050"', toml.read_text()))


@pytest.mark.slow
def test_env_secrets_never_reach_any_artifact(tiny_model, tmp_path):
    """Fake .env secrets, printed by the job and in a failure reason: no log, record, report, store object or workdir file holds one."""
    project = make_project(tmp_path / "p", tiny_model)
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    leaky_target(project)

    outputs = []
    bad = cli(project, "launch", "--stage", "1", "--cloud", "local-broken")
    assert bad.returncode == 1, bad.stderr[-2000:]
    good = cli(project, "launch", "--stage", "1", "--cloud", "local-rtx4050")
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    outputs += [bad, good]

    from amigo_burst.state.records import RunStore

    failed, done = RunStore(project / ".amigo" / "state.db").list()
    assert failed.status == "FAILED" and failed.reason == "error: auth failed for token ****", failed.reason
    assert done.status == "SUCCEEDED"
    log = (project / ".amigo" / "runs" / failed.id / "train.log").read_text()
    assert "debug" not in log and "****" in log  # the redaction really ran on this log
    for args in (("status",), ("status", failed.id), ("logs", failed.id), ("logs", done.id),
                 ("report", "--format", "json"), ("report", "--format", "md"), ("report", "--format", "html"),
                 ("report",), ("config", "check")):
        r = cli(project, *args)
        assert r.returncode == 0, (args, r.stderr[-2000:])
        outputs.append(r)
    assert '"runs"' in outputs[-5].stdout or failed.id in outputs[-5].stdout  # the json report has the runs

    for r in outputs:
        assert not leaks((r.stdout + r.stderr).encode()), (r.args[4:], leaks((r.stdout + r.stderr).encode()))
    scanned = 0
    for p in (project / ".amigo").rglob("*"):
        if p.is_file():
            scanned += 1
            assert not leaks(p.read_bytes()), f"{leaks(p.read_bytes())} leaked into {p}"
    assert scanned > 50  # state.db, logs, launch.json, work dirs, the store's objects and manifests


def test_bundle_and_store_exclude_secret_files(tmp_path, monkeypatch):
    """`.env*`, `*.pem`, `*credentials*` and `.git` inside train/ stay out of the workdir bundle and the store."""
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle import inputs as launch  # the bundle and the inputs: lifecycle/inputs.py

    fake_repo = tmp_path / "repo"
    shutil.copytree(REPO / "train", fake_repo / "train", ignore=shutil.ignore_patterns("__pycache__"))
    planted = {".env": "HF_TOKEN", ".env.production": "WANDB_API_KEY", "id_rsa.pem": "AWS_SECRET_ACCESS_KEY",
               "aws_credentials.json": "VAST_API_KEY", ".git/config": "HF_TOKEN", "configs/.env.local": "HF_TOKEN"}
    for rel, name in planted.items():
        (fake_repo / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake_repo / "train" / rel).write_text(f"{name}={SECRETS[name]}\n")
    monkeypatch.setattr(launch, "REPO_ROOT", fake_repo)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "amigo.toml").write_text('[project]\nname = "x"\n[model]\nbase = "b"\narch = "tiny"\n'
                                        '[stages.1]\ndataset = { path = "d.jsonl" }\n')
    (project / "d.jsonl").write_text('{"instruction": "x", "code": "y"}\n')
    cfg = load_config(project / "amigo.toml")
    work = project / ".amigo" / "work" / "r1"
    work.mkdir(parents=True)
    launch.build_bundle(work)
    launch.put_inputs(cfg, "r1", project / "d.jsonl", None)

    bundle = {p.relative_to(work / "train").as_posix() for p in (work / "train").rglob("*") if p.is_file()}
    assert "config.py" in bundle and "storage/core.py" in bundle
    assert not bundle & set(planted), bundle & set(planted)
    from train.storage import open_store

    code = open_store(f"file://{project}/.amigo/store").read_manifest("code/r1")["files"]
    assert "config.py" in code and not set(code) & set(planted)
    for p in (project / ".amigo").rglob("*"):
        if p.is_file():
            assert not leaks(p.read_bytes()), f"{leaks(p.read_bytes())} leaked into {p}"
