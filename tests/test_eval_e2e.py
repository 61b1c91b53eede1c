"""`amigo-burst eval --cloud slurm`: the benchmark alone, launched through real SkyPilot on the loopback
Slurm cluster as a recorded run handed to the worker (the same YAML, setup.sh and run.sh a training
launch uses, with AMIGO_TASK=eval), the adapter carried in the workdir (file:// store: rsync transport)
or through moto's S3 server, the results brought back, the cluster torn down, the secret nowhere in
what comes back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli
from tests.test_cloud_e2e import FAKE_TOKEN, slurm_project  # the node is this machine; .env holds FAKE_TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # a first SkyPilot launch on the cluster: minutes


def check_eval(project: Path, r) -> None:
    from amigo_burst.runners.sky import our_clusters

    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert (res["stage"], res["benchmark"], res["problems"], res["where"]) == (1, "humaneval", 1, "slurm")
    assert res["pass_at_1"] == res["passed"] / 1 and res["sandbox"]["network"] in ("netns", "userns+netns",
                                                                                     "audit-hook")
    d = project / ".amigo" / "evals" / res["eval_id"]
    assert json.loads((d / "metrics.json").read_text())["humaneval"]["problems"] == 1
    assert "humaneval: 1/1 problems" in (d / "eval.log").read_text(), "the job's log streamed back"
    from amigo_burst.state.ids import cluster_name
    from amigo_burst.state.records import open_records

    run = open_records(project).get(res["eval_id"].removeprefix("eval-"))  # a recorded run, through the worker
    assert run.status == "SUCCEEDED" and run.artifacts["eval"] and run.cluster == cluster_name(run.id)
    assert run.cluster not in [c["name"] for c in our_clusters("amigo-")], "cluster torn down"
    for p in (project / ".amigo").rglob("*"):
        if p.is_file() and p.stat().st_size < 50_000_000:
            assert FAKE_TOKEN.encode() not in p.read_bytes(), f"secret leaked into {p}"


def test_eval_on_slurm_rsync_transport(slurm_sky_home, tiny_model, tmp_path):
    project = slurm_project(tmp_path / "p", tiny_model)
    r = cli(project, "eval", "--stage", "1", "--cloud", "slurm", "--limit", "1", "--max-new-tokens", "8", "--json",
            timeout=900)
    check_eval(project, r)


def test_eval_on_slurm_s3_transport(slurm_sky_home, tiny_model, moto_server, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="amigo-eval-e2e")
    project = slurm_project(tmp_path / "p", tiny_model, "s3://amigo-eval-e2e/runs", moto_server)
    with (project / ".env").open("a") as f:  # the cluster reaches the bucket with them (SkyPilot secrets)
        f.write("AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n")
    r = cli(project, "eval", "--stage", "1", "--cloud", "slurm", "--limit", "1", "--max-new-tokens", "8", "--json",
            timeout=900)
    check_eval(project, r)
