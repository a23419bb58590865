"""The README: every Python example runs as written, its generated parts (table of contents,
CLI reference) are current, and the LICENSE it names exists."""
import importlib.util
import os
import re
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _text():
    with open(README, encoding="utf-8") as fh:
        return fh.read()


def python_blocks(text):
    """(line number, code) of every ```python block."""
    return [(text[: m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


BLOCKS = python_blocks(_text())


def _tools():
    spec = importlib.util.spec_from_file_location("readme_tool", os.path.join(ROOT, "tools", "readme.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_every_python_example_runs_as_written(line, code, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # examples may write files (plots)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


def test_table_of_contents_and_cli_reference_are_current():
    text = _text()
    assert _tools().update(text) == text, "run: python tools/readme.py"


def test_every_command_and_option_is_in_the_cli_reference():
    from initwise.cli import build_parser

    text = _text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert f"### `initwise {name}`" in text
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text or f", {flag}" in text, (name, flag)


def test_license_and_picture_near_the_top():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as fh:
        license_text = fh.read()
    assert license_text.startswith("MIT License") and "2026 the initwise authors" in license_text
    head = _text().splitlines()[:15]
    pictures = [ln for ln in head if re.match(r"!\[.+\]\((docs/[^)]+\.png)\)", ln)]
    assert pictures and os.path.exists(os.path.join(ROOT, re.search(r"\((docs/[^)]+)\)", pictures[0]).group(1)))
    assert "## Contents" in "\n".join(_text().splitlines()[:20])
