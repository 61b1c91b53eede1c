"""README.md's command examples, read from the file, and how each one is checked.

    examples(text)                      every `amigo-burst ...` in backticks and every code-block line
                                        starting with it (synopses with `[--x | y]` are not examples)
    check_examples(project, tmp_path)   runs each in a finished demo project; returns what it ran

An example exits 0 in the demo project (5 local stages done), with its placeholders filled in: RUN
and example run ids (s2-vast-20261126-101500-ab12) become a real run of that stage. The few that need
a cloud account or SkyPilot's API server are listed in README_CLOUD with what they must do here
instead. A new example in README.md is checked without any change to this file; one that needs a
cloud goes into README_CLOUD.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.helpers import cli, runs_of

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXAMPLE_ID = re.compile(r"\bs([1-5])-[a-z0-9-]+?-\d{8}-\d{6}-[0-9a-f]{4}\b")
EXAMPLE_PREFIX = re.compile(r"s([1-5])-[a-z][a-z0-9]*")  # `logs s2-vast`: a unique prefix of a run id
SYNOPSIS = re.compile(r"\[--|\|")  # `launch --stage N [--cloud local|runpod|...]` describes, it is no example

# example -> (how it is run here, exit code, what it must print). "no-credentials": an empty HOME, so
# SkyPilot's credential check refuses before anything is recorded; "no-network": HTTP(S) through a proxy
# port nothing listens on (127.0.0.1:9), so a download fails at once and never leaves this machine;
# "sky": SkyPilot's API server, isolated (temp HOME and port) and stopped afterwards; "run": as is, in
# the finished demo project, where a documented refusal is the right answer.
README_CLOUD = {
    "amigo-burst launch --stage 2 --cloud vast": ("no-credentials", 2, "SkyPilot cannot use vast"),
    "amigo-burst launch --stage 2 --cloud vast --max-usd 20": ("no-credentials", 2, "SkyPilot cannot use vast"),
    "amigo-burst probe --stage 2 --cloud vast --steps 20 --json": ("no-credentials", 2, "SkyPilot cannot use vast"),
    "amigo-burst prices --refresh": ("no-network", 2, "could not refresh SkyPilot's catalogs"),
    # every demo stage SUCCEEDED: nothing to resume, said in one line
    "amigo-burst launch --stage 1 --resume": ("run", 2, "no stage 1 run left a checkpoint to continue from"),
    "amigo-burst down --all": ("sky", 0, "nothing to stop"),
    "amigo-burst down --cluster NAME": ("sky", 2, "cluster amigo-nope does not exist"),
}


def examples(text: str) -> list[str]:
    found: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            if line.startswith("amigo-burst "):
                found.append(re.split(r"\s{2,}", line.strip())[0])  # the description after 2+ spaces
            continue
        found += re.findall(r"`(amigo-burst [^`]*)`", line)
    out = []
    for ex in found:
        ex = re.sub(r"\[([A-Z]+)\]", r"\1", ex.strip())  # `status [RUN]`: with the optional RUN
        if not SYNOPSIS.search(ex) and ex not in out:
            out.append(ex)
    return out


def fill(example: str, project: Path) -> list[str]:
    """The example as argv (after `amigo-burst`), placeholders filled from the project's runs."""
    runs = [r for r in runs_of(project) if r.status == "SUCCEEDED"]

    def run_of(stage: int) -> str:
        return [r for r in runs if r.stage == stage][-1].id

    args = shlex.split(example)[1:]  # `try --stage 5 "Write a function"`: the prompt is one argument
    out = []
    for a in args:
        if m := EXAMPLE_ID.fullmatch(a):
            a = run_of(int(m.group(1)))
        elif m := EXAMPLE_PREFIX.fullmatch(a):
            a = run_of(int(m.group(1)))[:-3]  # still a prefix, unique among the demo's runs
        a = {"RUN": run_of(2), "NAME": "amigo-nope"}.get(a, a)
        out.append(a)
    return out


def check_examples(project: Path, tmp_path: Path) -> list[str]:
    from tests.sky_fixtures import isolated_sky_api

    checked, problems = [], []
    sky_examples = []
    for ex in examples(README.read_text(encoding="utf-8")):
        how, code, expect = README_CLOUD.get(ex, ("run", 0, ""))
        if how == "sky":
            sky_examples.append(ex)
            continue
        (tmp_path / "empty-home").mkdir(exist_ok=True)
        env = {"no-credentials": {"HOME": str(tmp_path / "empty-home")},
               "no-network": {"HOME": str(tmp_path / "empty-home"), "HTTPS_PROXY": "http://127.0.0.1:9",
                              "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}}.get(how)
        r = cli(project, *fill(ex, project), env=env, timeout=600)
        problems += _problem(ex, r, code, expect)
        checked.append(ex)
    if sky_examples:
        with isolated_sky_api(tmp_path / "sky-home"):
            for ex in sky_examples:
                _how, code, expect = README_CLOUD[ex]
                r = cli(project, *fill(ex, project), timeout=600)
                problems += _problem(ex, r, code, expect)
                checked.append(ex)
    assert not problems, "\n\n".join(problems)
    return checked


def _problem(example: str, r, code: int, expect: str) -> list[str]:
    out = r.stdout + r.stderr
    if r.returncode == code and expect in out and "Traceback" not in out:
        return []
    return [f"README example `{example}` -> exit {r.returncode} (want {code}"
            + (f", printing {expect!r}" if expect else "") + f"):\n{out[-1500:]}"]
