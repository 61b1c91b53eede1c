"""Real-shaped stand-ins for the five hub datasets amigo.toml trains on (no network here).

Each repository is written the way the hub holds it: the same file names and formats, the same
columns and column types (read from the dataset cards: `dataset_info.features`), the same split and
config layout, and the awkward rows real data has:

    ise-uiuc/Magicoder-OSS-Instruct-75K   one JSONL at the root (no configs); a row whose solution is null
    bigcode/commitpackft                  a loading script (commitpackft.py) + data/<lang>/data.jsonl;
                                          several licences; an old file far longer than max_seq_len
    JetBrains-Research/mbpp_w_stacktraces parquet under data/ with README configs; exec_stacktraces is a
                                          list of strings, empty for a passing attempt, repeated per test
    nvidia/OpenCodeReasoning              config split_0 with split split_0 (split_0/train-*.parquet);
                                          a row whose reasoning is ~60 kB (over max_seq_len)
    Vezora/Code-Preference-Pairs          one JSONL at the root: input, accepted, rejected; a row with
                                          no `rejected`

    write_hub(root)      -> root/<org>/<name>/... (served by tests/hub_server.py)
    LOCAL_FILES[hub]     the file of each repository a stage reads when pointed at a local copy
"""

from __future__ import annotations

import json
from pathlib import Path

N = 40  # rows per dataset: a few optimizer steps per stage at the shipped batch sizes

FUNCS = ["add", "mean", "slugify", "is_prime", "flatten", "word_count", "clamp", "reverse_words", "gcd", "chunk"]


def _code(i: int, broken: bool = False) -> str:
    name = FUNCS[i % len(FUNCS)]
    body = "return a - b" if broken else "return a + b"
    return f"def {name}_{i}(a, b):\n    \"\"\"{name} for case {i}.\"\"\"\n    {body}\n"


def magicoder_rows() -> list[dict]:
    rows = []
    for i in range(N):
        rows.append({"lang": "python", "raw_index": 1000 + i, "index": i, "seed": f"# seed snippet {i}\nx = {i}\n",
                     "openai_fingerprint": "fp_44709d6fcb",
                     "problem": f"Write a Python function `{FUNCS[i % 10]}_{i}(a, b)` for case {i}.",
                     "solution": _code(i)})
    rows[7]["solution"] = None  # a missing answer: skipped and counted
    return rows


LICENSES = ["mit", "apache-2.0", "bsd-3-clause", "mit", "mpl-2.0"]


def commitpack_rows() -> list[dict]:
    rows = []
    for i in range(N):
        old = _code(i, broken=True)
        if i == 5:  # an old file far over max_seq_len: its context is trimmed, not the row dropped
            old = "".join(f"CONSTANT_{k} = {k}  # generated table row\n" for k in range(3000)) + old
        rows.append({"commit": f"{i:040x}", "old_file": f"pkg/mod_{i}.py", "new_file": f"pkg/mod_{i}.py",
                     "old_contents": old, "new_contents": _code(i), "subject": f"Fix {FUNCS[i % 10]}_{i}",
                     "message": f"Fix {FUNCS[i % 10]}_{i}: add instead of subtract\n",
                     "lang": "Python", "license": LICENSES[i % len(LICENSES)], "repos": f"user{i}/repo{i}"})
    return rows


def mbpp_rows() -> list[dict]:
    rows = []
    for i in range(N):
        passing = i % 5 in (0, 3)  # 40% passing attempts: no stack trace
        trace = (f"Traceback (most recent call last):\n  File \"test.py\", line 3, in <module>\n"
                 f"    assert {FUNCS[i % 10]}_{i}(2, 3) == 5\nAssertionError")
        rows.append({
            "qid": f"{i}", "title": f"{FUNCS[i % 10]}_{i}", "language": "Python",
            "text": f"Write {FUNCS[i % 10]}_{i}.", "signature_with_docstring": f"def {FUNCS[i % 10]}_{i}(a, b):",
            "signature": f"def {FUNCS[i % 10]}_{i}(a, b):", "arguments": ["a", "b"], "solution": _code(i),
            "question_info": {"commands": [["python", "__FILENAME__"]], "entry_cls_name": "Solution",
                              "entry_fn_name": f"{FUNCS[i % 10]}_{i}", "extension": "py",
                              "test_case_ids": ["0", "1", "2"], "test_code": "PLACEHOLDER_CODE_BODY",
                              "test_list": "[]", "timeouts": [10]},
            "question": f"Write {FUNCS[i % 10]}_{i}.",
            "prompt": [{"content": f"Write {FUNCS[i % 10]}_{i}.", "role": "user"}],
            "test_code_format": "", "entry_fn_name": f"{FUNCS[i % 10]}_{i}", "placeholder_code": "",
            "experiment_name": "exp", "extract_code_func_name": "extract", "attempt_id": f"a{i}",
            "answering_model": "deepseek-ai/deepseek-coder-6.7b-instruct", "answer": "```python\n" + _code(i, not passing),
            "code": _code(i, broken=not passing), "datapoint_id": f"d{i}",
            "exec_results": ["PASSED"] * 3 if passing else ["FAILED"] * 3,
            # per test case: a passing attempt has empty strings (or none); a failing one the same trace per test
            "exec_stacktraces": (["", "", ""] if i % 2 else []) if passing else [trace, trace, trace],
        })
    return rows


def ocr_rows() -> list[dict]:
    rows = []
    for i in range(N):
        reasoning = f"<think>\nCase {i}: read a and b, print their sum.\n</think>\nRead two numbers and add them."
        if i == 11:  # ~60 kB of reasoning: over max_seq_len, dropped and reported
            reasoning = "<think>\n" + "Let me reconsider the constraints once more.\n" * 1400 + "</think>\n"
        rows.append({"id": f"{i:032x}", "input": f"Given two integers a and b (case {i}), print a + b.",
                     "output": reasoning, "source": "codeforces", "license": "cc-by-4.0", "dataset": "code_contests",
                     "split": "train", "difficulty": "EASY", "solution": f"a, b = map(int, input().split())\nprint(a + b)  # {i}"})
    return rows


def vezora_rows() -> list[dict]:
    rows = [{"input": f"Implement {FUNCS[i % 10]}_{i}(a, b).", "accepted": _code(i), "rejected": _code(i, broken=True)}
            for i in range(N)]
    del rows[3]["rejected"]  # a pair with one side missing: skipped and counted
    return rows


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _card(path: Path, configs: str = "") -> None:
    path.write_text(f"---\nlicense: other\n{configs}---\n# stand-in of the real dataset card\n", encoding="utf-8")


LOCAL_FILES = {
    "ise-uiuc/Magicoder-OSS-Instruct-75K": "data-oss_instruct-decontaminated.jsonl",
    "bigcode/commitpackft": "data/python/data.jsonl",
    "JetBrains-Research/mbpp_w_stacktraces": "data/train-00000-of-00001.parquet",
    "nvidia/OpenCodeReasoning": "split_0/train-00000-of-00030.parquet",
    "Vezora/Code-Preference-Pairs": "Code-Preference-Pairs.jsonl",
}


def write_hub(root: Path) -> Path:
    """The five repositories under root/<org>/<name>/, as the hub lays them out."""
    r = root / "ise-uiuc/Magicoder-OSS-Instruct-75K"
    _jsonl(r / LOCAL_FILES["ise-uiuc/Magicoder-OSS-Instruct-75K"], magicoder_rows())
    _card(r / "README.md")

    r = root / "bigcode/commitpackft"
    _jsonl(r / "data/python/data.jsonl", commitpack_rows())
    _jsonl(r / "data/go/data.jsonl", commitpack_rows()[:3])
    (r / "commitpackft.py").write_text('"""CommitPackFT"""\nimport datasets\n', encoding="utf-8")  # the loading script
    _card(r / "README.md")

    r = root / "JetBrains-Research/mbpp_w_stacktraces"
    _parquet(r / LOCAL_FILES["JetBrains-Research/mbpp_w_stacktraces"], mbpp_rows())
    _parquet(r / "data/test-00000-of-00001.parquet", mbpp_rows()[:4])
    _card(r / "README.md", "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
                           "  - split: test\n    path: data/test-*\n")

    r = root / "nvidia/OpenCodeReasoning"
    _parquet(r / LOCAL_FILES["nvidia/OpenCodeReasoning"], ocr_rows())
    _parquet(r / "split_1/train-00000-of-00001.parquet", [{**x, "index": "0", "input": "-"} for x in ocr_rows()[:3]])
    _card(r / "README.md", "configs:\n- config_name: split_0\n  data_files:\n  - split: split_0\n    path: split_0/train-*\n"
                           "- config_name: split_1\n  data_files:\n  - split: split_1\n    path: split_1/train-*\n")

    r = root / "Vezora/Code-Preference-Pairs"
    _jsonl(r / LOCAL_FILES["Vezora/Code-Preference-Pairs"], vezora_rows())
    _card(r / "README.md")
    return root


def shipped_with_local_data(text: str, hub_root: Path) -> str:
    """amigo.toml's text with only each stage's dataset *source* replaced (hub, subset, split,
    data_files -> path of the local copy); columns, filters, max_rows and everything else stay."""
    import re

    def local(m: re.Match) -> str:
        inner = m.group(1)
        hub = re.search(r'hub = "([^"]+)"', inner).group(1)
        for pattern in (r'hub = "[^"]+", ', r'subset = "[^"]+", ', r'split = "[^"]+", ', r'data_files = \[[^\]]*\], ',
                        r'prepare = "[^"]+", '):
            inner = re.sub(pattern, "", inner)
        return f'dataset = {{ path = "{hub_root / hub / LOCAL_FILES[hub]}", {inner} }}'

    out, n = re.subn(r"^dataset = \{ (.*) \}$", local, text, flags=re.M)
    assert n == 5, f"expected five stage datasets in amigo.toml, rewrote {n}"
    return out
