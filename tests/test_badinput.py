"""Bad input to the controller (issue 7): broken amigo.toml and sky YAMLs, broken dataset files, run ids
and paths with spaces and unicode. Every case: one line on stderr, exit 2, no traceback, nothing written.

Property-based (hypothesis) over `parse_config`: any mutation of a valid config, of its structure or of
its text, gives either a valid config or a one-line UserError, never another exception.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amigo_burst.config import AmigoConfig, parse_config
from amigo_burst.errors import UserError
from tests.helpers import cli, make_project

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.badinput
DEMO = (REPO / "presets" / "demo.toml").read_text()
SHIPPED = (REPO / "amigo.toml").read_text()


# --- property-based: parse_config never raises anything but a one-line UserError --------------------
def toml_value(v) -> str:
    """A tiny TOML writer (inline tables only) for the mutated documents."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("-" if v < 0 else "") + "inf" if math.isinf(v) else "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    return "".join(f"{json.dumps(str(k))} = {toml_value(v)}\n" for k, v in doc.items())


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.one_of(st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True), text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(text, inner, max_size=3)), max_leaves=6)
KEYS = st.one_of(st.sampled_from(["project", "model", "lora", "stages", "store", "local_gpu", "targets", "name",
                                  "base", "arch", "method", "r", "alpha", "dropout", "target_modules", "dataset",
                                  "path", "hub", "split", "columns", "max_rows", "epochs", "max_seq_len",
                                  "learning_rate", "micro_batch", "grad_accum", "max_steps", "target", "max_usd",
                                  "max_hours", "url", "endpoint_url", "vram_gib", "1", "2", "5", "6", "0"]), text)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated_docs(draw):
    doc = tomllib.loads(draw(st.sampled_from([DEMO, SHIPPED])))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        op = draw(st.sampled_from(["delete", "retype", "unknown", "rename"]))
        path = draw(st.sampled_from(paths))
        parent = _at(doc, path[:-1])
        if op == "delete":
            del parent[path[-1]]
        elif op == "retype":
            parent[path[-1]] = draw(values)
        elif op == "unknown" and isinstance(_at(doc, path), dict):
            _at(doc, path)[draw(KEYS)] = draw(values)
        elif op == "rename":
            parent[draw(KEYS)] = parent.pop(path[-1])
    return doc


def check_outcome(toml_text: str) -> None:
    try:
        cfg = parse_config(toml_text, "amigo.toml")
    except UserError as e:
        msg = str(e)
        assert msg.startswith("amigo.toml: ") and len(msg.splitlines()) == 1, repr(msg)
        return
    assert isinstance(cfg, AmigoConfig)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_docs())
def test_structural_mutations_give_a_config_or_one_line_error(doc):
    """Deleted, retyped, renamed and unknown keys anywhere in a valid amigo.toml: a config or one line."""
    check_outcome(to_toml(doc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([DEMO, SHIPPED]), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 40),
                                                             st.text(max_size=8)), min_size=1, max_size=4))
def test_text_mutations_give_a_config_or_one_line_error(base, edits):
    """Random characters inserted over/into a valid amigo.toml's text: a config or one line."""
    s = base
    for pos, cut, ins in edits:
        pos %= len(s) + 1
        s = s[:pos] + ins + s[pos + cut:]
    check_outcome(s)


@pytest.mark.parametrize("bad", [
    '"a\\nb" = 1\n',  # a key with a newline in it
    DEMO.replace("[lora]\n", '[lora]\n"r\\nnew line" = 1\n'),  # an unknown key with a newline
    DEMO.replace("[project]\n", '[project]\n"\\u2028odd" = 2\n'),  # U+2028 splits lines too
    '[project]\nname = "x"\n[model]\nbase = "b"\narch = "a"\n[stages."1\\r\\nx"]\ndataset = {path = "d"}\n',
    '[project]\nname = "x"\n[model]\nbase = "b"\narch = "a"\n[stages."²"]\ndataset = {path = "d"}\n',
])
def test_odd_keys_are_one_line(bad):
    """Keys with line breaks or odd digits still give exactly one line."""
    check_outcome(bad)
    with pytest.raises(UserError):
        parse_config(bad, "amigo.toml")


# --- the CLI: one line, exit 2, no traceback, nothing written -----------------------------------------
def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} | {
        p.relative_to(root).as_posix() + "/": b"" for p in root.rglob("*") if p.is_dir()}


def assert_refused(project: Path, *args: str, expect: str, config: Path | None = None) -> str:
    """Run ARGS; exit 2, one stderr line containing EXPECT, no traceback, the project folder unchanged."""
    before = snapshot(project)
    r = cli(project, *args, config=config)
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-1500:], err[-1500:])
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in r.stdout + err, err
    assert expect in err, (expect, err)
    assert snapshot(project) == before, f"written: {set(snapshot(project)) ^ set(before)}"
    return err


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model) -> Path:
    """A demo project in a folder whose path has spaces and unicode."""
    return make_project(tmp_path_factory.mktemp("bad") / "my prøject ñ 名前", tiny_model)


def _variant(project: Path, name: str, text: str) -> Path:
    p = project.parent / name
    p.mkdir(exist_ok=True)
    (p / "amigo.toml").write_text(text, encoding="utf-8")
    return p


TOML_CASES = {
    "syntax": (lambda t: t.replace("[model]", "[model"), "TOML syntax error"),
    "type": (lambda t: t.replace("max_steps = 8", 'max_steps = "eight"', 1), "stages.1.max_steps"),
    "unknown_key": (lambda t: t.replace("[lora]\n", "[lora]\nrank = 4\n"), "lora.rank: unknown key"),
    "missing_field": (lambda t: t.replace('name = "amigo-demo"', ""), "project.name: required field is missing"),
    "bad_stage": (lambda t: t.replace("[stages.5]", "[stages.6]"), "stage keys must be 1-5"),
    "store_scheme": (lambda t: t.replace("file://.amigo/store", "ftp://x"), "unknown store scheme"),
    "not_utf8": (None, "cannot read"),
}


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_broken_amigo_toml(project, case):
    """A broken amigo.toml (syntax, type, unknown key, missing field, bad stage, scheme, bytes): `config check` and `launch` refuse in one line."""
    mutate, expect = TOML_CASES[case]
    good = (project / "amigo.toml").read_text(encoding="utf-8")
    p = project.parent / f"toml {case} ü"
    p.mkdir(exist_ok=True)
    if mutate is None:
        (p / "amigo.toml").write_bytes(good.encode() + b"\n# \xff\xfe broken\n")
    else:
        bad = mutate(good)
        assert bad != good
        (p / "amigo.toml").write_text(bad, encoding="utf-8")
    for args in (("config", "check"), ("launch", "--stage", "1"), ("status",)):
        assert_refused(p, *args, expect=expect)


SKY_CASES = {
    "syntax": (lambda t: t.replace("resources:\n", "resources: [\n", 1), "YAML syntax error"),
    "missing_run": (lambda t: t.replace("run: |\n  bash train/capped.sh run bash train/run.sh\n", ""), "missing field 'run'"),
    "resources_type": (lambda t: t.replace("resources:\n", "resources: 3\nx:\n", 1), "resources: expected a mapping"),
    "bad_count": (lambda t: t.replace("RTX4050:1", "RTX4050:many"), "bad count"),
    "not_mapping": (lambda t: "- just\n- a list\n", "expected a SkyPilot task mapping"),
}


@pytest.mark.parametrize("case", sorted(SKY_CASES))
def test_broken_sky_yaml(project, case):
    """A broken sky/local-rtx4050.yaml in the project (syntax, missing run, wrong types): `launch` refuses in one line."""
    mutate, expect = SKY_CASES[case]
    p = _variant(project, f"sky {case} ü", (project / "amigo.toml").read_text())
    (p / "sky").mkdir(exist_ok=True)
    for y in (REPO / "sky").glob("*.yaml"):
        (p / "sky" / y.name).write_text(y.read_text())
    y = p / "sky" / "local-rtx4050.yaml"
    bad = mutate(y.read_text())
    y.write_text(bad)
    assert_refused(p, "launch", "--stage", "1", "--cloud", "local", expect=expect)


GOOD_ROW = {"instruction": "Write add(a, b).", "code": "def add(a, b):\n    return a + b"}
# Each broken row appears twice after one good row: 2 of 3 rows unusable, more than the default
# dataset.max_bad_fraction (0.5), so the launch refuses, naming the reason, its count and the first row.
DATA_CASES = {
    "invalid_json": (b'{"instruction": "x", "code": \n', "invalid JSON (Expecting value) x2"),
    "missing_field": (json.dumps({"instruction": "x"}).encode() + b"\n", "missing field 'code' x2"),
    "empty_string": (json.dumps({"instruction": "x", "code": "  "}).encode() + b"\n", "field 'code' is empty x2"),
    "wrong_type": (json.dumps({"instruction": "x", "code": 7}).encode() + b"\n", "field 'code' must be a string, got int x2"),
    "not_object": (b"[1, 2]\n", "expected a JSON object, got list x2"),
    "huge_line": (b'{"instruction": "' + b"x" * (9 * 2**20) + b'", "code": "y"}\n', "line over 8 MiB (9 MiB) x2"),
    "not_utf8": (b'{"instruction": "caf\xe9", "code": "y"}\n', "not UTF-8 x2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_broken_dataset_file(project, case):
    """Mostly broken dataset rows (invalid JSON, missing field, empty string, wrong type, huge line, non-UTF-8): `launch` names the reason, its count and the first file:line, writes nothing."""
    bad, expect = DATA_CASES[case]
    data = project.parent / f"data {case} ñ.jsonl"
    data.write_bytes(json.dumps(GOOD_ROW).encode() + b"\n" + bad + bad)
    toml = (project / "amigo.toml").read_text().replace(f"{REPO}/train/samples/stage1.jsonl", str(data))
    p = _variant(project, f"data {case}", toml)
    err = assert_refused(p, "launch", "--stage", "1", expect=expect)
    assert "2 of 3 rows unusable" in err and f"(first: {data}:2)" in err
    assert not (p / ".amigo").exists()


@pytest.mark.parametrize(("args", "expect"), [
    (("logs", "s1 lócal 20261126 ü"), "unknown run id 's1 lócal 20261126 ü'"),
    (("status", "run with spaces ✓"), "unknown run id"),
    (("download", "名前-run"), "unknown run id"),
    (("down", "s9-💥"), "unknown run id"),
    (("launch", "--stage", "nl 2 cöde"), "unknown stage"),
    (("launch", "--stage", "1", "--cloud", "vást ü"), "unknown target 'vást ü'"),
    (("launch", "--stage", "1", "--from", "s0 ñ"), "unknown run id"),
    (("launch", "--stage", "1", "--max-usd", "nan"), "--max-usd must be a number > 0 (got nan)"),
    (("launch", "--stage", "1", "--max-usd", "inf"), "--max-usd must be a number > 0 (got inf)"),
    (("pipeline", "--max-usd", "inf"), "--max-usd must be a number > 0 (got inf)"),
    (("launch", "--stage", "1", "--cloud", "local", "--gpu", "H100"), "--gpu H100: local-rtx4050 trains on"),
    (("report", "--out", "nö such folder/r.html"), "folder nö such folder does not exist"),
    (("report", "--format", "html", "--out", "."), "--out .: is a folder"),
    (("estimate", "--model", "tiny", "--tokens", "lots"), "--tokens: 'lots' is not a count"),
    (("down", "--cluster", "not-ours"), "was not started by amigo-burst"),
])
def test_run_ids_and_names_with_spaces_and_unicode(project, args, expect):
    """Run ids, stages and targets with spaces and unicode: one line naming them, nothing written."""
    assert_refused(project, *args, expect=expect)


def test_paths_with_spaces_and_unicode(project, tmp_path):
    """Config and dataset paths with spaces and unicode: a missing one is named in one line; an existing one works."""
    missing = project.parent / "nö such dir" / "amigo ✓.toml"
    assert_refused(project, "config", "check", expect=f"config file not found: {missing}", config=missing)
    gone = project.parent / "dätä with spaces" / "stage 1 ñ.jsonl"
    toml = (project / "amigo.toml").read_text().replace(f"{REPO}/train/samples/stage1.jsonl", str(gone))
    p = _variant(project, "missing data ü", toml)
    assert_refused(p, "launch", "--stage", "1", expect=f"dataset file not found: {gone}")
    f = tmp_path / "a file ñ"
    f.write_text("x")
    assert_refused(project, "download", "--stage", "1", "--to", str(f), expect=f"--to {f}: is a file")
    r = cli(project, "config", "check")
    assert r.returncode == 0 and "is valid" in r.stdout, r.stderr


@pytest.mark.slow
def test_bad_row_that_reaches_the_entrypoint_is_the_failure_reason(project):
    """A bad row only the entrypoint sees (added by the target's run script): the run is FAILED with train's one line as the reason."""
    from amigo_burst.state.records import RunStore

    p = _variant(project, "reason ü", (project / "amigo.toml").read_text())
    (p / "sky").mkdir(exist_ok=True)
    y = (REPO / "sky" / "local-rtx4050.yaml").read_text()
    bad_row = '{"instruction": "x", "code": ""}'
    (p / "sky" / "local-rtx4050.yaml").write_text(y.replace(
        "run: |\n  bash train/capped.sh run bash train/run.sh",
        'run: |\n  "$AMIGO_PYTHON" -m train.storage get "$AMIGO_INPUTS" inputs\n'
        f"  echo '{bad_row}' >> inputs/data.jsonl\n"
        "  AMIGO_INPUTS= bash train/capped.sh run bash train/run.sh"))
    r = cli(p, "launch", "--stage", "1", "--cloud", "local")
    run = RunStore(p / ".amigo" / "state.db").list()[-1]
    assert r.returncode == 1 and run.status == "FAILED", (r.stdout[-2000:], r.stderr[-2000:])
    assert "field 'code' is empty" in (run.reason or "") and "data.jsonl" in run.reason, run.reason
    assert "Traceback" not in r.stderr
