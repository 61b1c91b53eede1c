"""Run ids and SkyPilot cluster names: the one place their formats are written.

    run id:   s<stage>-<target>-<yyyymmdd-hhmmss UTC>-<4 hex>   s2-vast-20261126-101500-ab12
    cluster:  amigo-<run id, lowercase>                          amigo-s2-vast-20261126-101500-ab12

Run ids sort by time and are safe in paths and manifest names; the amigo- prefix marks the
clusters this tool started (`down --all`, orphan detection). Manifest names: train/storage/names.py.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

CLUSTER_PREFIX = "amigo-"
_RUN_ID = re.compile(r"^s([1-5])-([a-z0-9-]+?)-(\d{8}-\d{6})-([0-9a-f]{4})$")


def new_run_id(stage: int, target: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", target.lower()).strip("-") or "target"
    return f"s{stage}-{slug}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def cluster_name(run_id: str) -> str:
    """SkyPilot cluster names are lowercase and start with a letter."""
    return f"{CLUSTER_PREFIX}{run_id}".lower()


def is_ours(cluster: str) -> bool:
    return cluster.startswith(CLUSTER_PREFIX)


def parse_run_id(run_id: str) -> tuple[int, str] | None:
    """(stage, target alias) of a run id, None when it is not one of ours."""
    m = _RUN_ID.match(run_id)
    return (int(m.group(1)), m.group(2)) if m else None


def run_id_of_cluster(cluster: str) -> str:
    return cluster[len(CLUSTER_PREFIX):] if is_ours(cluster) else cluster
