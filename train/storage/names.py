"""Manifest names in the store: the one place their format is written.

The controller (inputs, code) and the entrypoint (outputs, checkpoints) both name manifests
here, so a run's objects are found by the same names on the laptop and on the rented machine.

    inputs/<run>                        prepared dataset + previous adapter (S3 transport)
    code/<run>                          the train/ bundle the run executed
    runs/<run>/outputs                  adapter/, metrics.json, train.log, tb/
    runs/<run>/checkpoints/checkpoint-<step>
"""

from __future__ import annotations


def inputs(run_id: str) -> str:
    return f"inputs/{run_id}"


def code(run_id: str) -> str:
    return f"code/{run_id}"


def outputs(run_id: str) -> str:
    return f"runs/{run_id}/outputs"


def checkpoints_prefix(run_id: str) -> str:
    return f"runs/{run_id}/checkpoints/"


def checkpoint(run_id: str, checkpoint_dir_name: str) -> str:
    return checkpoints_prefix(run_id) + checkpoint_dir_name
