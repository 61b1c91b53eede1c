"""Store mirroring to a real S3 endpoint (moto's server on 127.0.0.1): checkpoints and outputs are
uploaded as they are written, and `--resume auto` on a fresh machine continues from the store."""

from __future__ import annotations

import shutil
import uuid

import pytest
from train_helpers import argv, generate_with_adapter, metrics, run_inprocess


@pytest.mark.slow
def test_mirror_then_resume_from_store(tiny_model, tmp_path, moto_server, monkeypatch):
    import boto3

    from train.storage import open_store

    tiny = tiny_model
    bucket = f"amigo-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/proj"
    monkeypatch.setenv("AMIGO_STORE_URI", uri)
    monkeypatch.setenv("AMIGO_STORE_ENDPOINT", moto_server)
    monkeypatch.setenv("AMIGO_RUN_ID", "s1-test-run")

    # 1. a run that the budget stops part-way ("the machine goes away" after a few checkpoints)
    out = tmp_path / "machine-a"
    args = argv(1, tiny, out, "--set", "max_steps=8", "--set", "save_steps=2", "--resume", "auto")
    monkeypatch.setenv("AMIGO_FAULT_STEP_DELAY_S", "0.4")
    assert run_inprocess([*args, "--max-runtime-s", "1.5"]) == 3
    stopped_at = metrics(out)["steps"]
    assert 0 < stopped_at < 8

    store = open_store(uri, endpoint=moto_server)
    names = store.list_manifests("runs/s1-test-run/")
    assert f"runs/s1-test-run/checkpoints/checkpoint-{stopped_at}" in names
    assert "runs/s1-test-run/outputs" in names
    files = store.read_manifest("runs/s1-test-run/outputs")["files"]
    assert {"adapter/adapter_model.safetensors", "metrics.json", "train.log"} <= set(files)
    assert not any(f.startswith(("checkpoints/", ".mirror/")) for f in files)
    ckpt_files = store.read_manifest(f"runs/s1-test-run/checkpoints/checkpoint-{stopped_at}")["files"]
    assert "trainer_state.json" in ckpt_files and "optimizer.pt" in ckpt_files
    assert metrics(out)["mirror"]["failed"] == []

    # 2. a fresh machine, same arguments: nothing local, the newest checkpoint comes from the store
    monkeypatch.setenv("AMIGO_FAULT_STEP_DELAY_S", "0")
    out_b = tmp_path / "machine-b"
    args_b = argv(1, tiny, out_b, "--set", "max_steps=8", "--set", "save_steps=2", "--resume", "auto")
    assert run_inprocess(args_b) == 0
    m = metrics(out_b)
    assert m["resumed_from"] == f"store:runs/s1-test-run/checkpoints/checkpoint-{stopped_at}"
    assert m["steps"] == 8 and m["steps_this_run"] == 8 - stopped_at

    # 3. the final outputs are in the store and usable from there
    dest = tmp_path / "downloaded"
    store.get_dir("runs/s1-test-run/outputs", str(dest))
    assert (dest / "metrics.json").is_file()
    generate_with_adapter(tiny, dest / "adapter")
    shutil.rmtree(out)
