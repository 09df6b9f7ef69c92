"""The README is the operator's manual: its generated parts and its commands must stay true.

* The configuration reference between the ``config-reference`` markers is the output of
  ``tce config reference`` (generated from the settings model), byte for byte, so adding,
  renaming or re-documenting a setting fails here until the README is regenerated.
* Every ``tce`` command line the README shows (code blocks and inline code) names subcommands
  and options the real parser has, so a renamed command or option cannot linger in the manual.
* The quick start's commands are the ones CI runs (``.ci/run``) and the demo script runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from appliance.cli import build_parser, main
from appliance.commands.config import reference_markdown
from appliance.settings import describe_settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- BEGIN config-reference -->", "<!-- END config-reference -->"
DEMO_COMMAND = "scripts/bootstrap && scripts/demo"
# `tce` where a command starts: at the start of the code, after a shell separator or prompt,
# environment assignments, `exec SERVICE` (docker compose) or as an installed script
# (.venv/bin/tce); not an argument such as `createdb -O tce` or a path such as /srv/tce/x.
_TCE = re.compile(r"\btce\s+(?=[a-z-])")
_COMMAND_START = re.compile(r"(?:^\s*|[;&|(]\s*|\$\s+|bin/|exec\s+\S+\s+|\b[A-Z_]+=\S+\s+)$")
_OPTION = re.compile(r"^\[?(--?[A-Za-z][\w-]*)")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_configuration_reference_is_generated_from_the_settings_model() -> None:
    text = readme()
    assert BEGIN in text and END in text, "README lost its configuration-reference markers"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == reference_markdown().strip(), (
        "README configuration reference is stale: replace the block between the markers with"
        " the output of 'tce config reference'")


def test_tce_config_reference_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == reference_markdown()


def test_the_reference_has_a_row_for_every_setting() -> None:
    rows = reference_markdown().splitlines()
    for key, kind, default, _doc in describe_settings():
        assert any(row.startswith(f"| `{key}` | {kind} | `{default}` |") for row in rows), key


def test_table_cells_escape_what_markdown_would_misread() -> None:
    from appliance.commands.config import _cell

    assert _cell("a | b") == r"a \| b"
    assert _cell("<b>bold</b> and <work_dir>") == r"\<b>bold\</b> and <work_dir>"


def test_quick_start_is_first_and_runs_what_ci_runs() -> None:
    text = readme()
    first_block = text.split("```", 2)[1]
    assert text.index("```") < text.index("\n## "), "the quick start must come first"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    commands = [line for line in first_block.splitlines()[1:] if line and not line.startswith("#")]
    assert commands == [DEMO_COMMAND, ci]
    assert "exec \"$tce\" demo" in (ROOT / "scripts" / "demo").read_text(encoding="utf-8")


# --- every tce command shown in the README exists ----------------------------------------------


def _code_texts(text: str) -> list[str]:
    """Lines of fenced and indented code blocks, and inline code spans."""
    found: list[str] = []
    fenced = False
    previous_blank = True
    in_indented = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            found.append(line)
            continue
        if line.startswith("    ") and (previous_blank or in_indented):
            in_indented = True
            found.append(line)
        else:
            in_indented = False
            found += re.findall(r"`([^`\n]+)`", line)
        previous_blank = not line.strip()
    return found


def tce_commands(text: str) -> list[str]:
    """Each ``tce ...`` invocation in the README's code, up to a shell separator or comment."""
    commands = []
    for code in _code_texts(text):
        for match in _TCE.finditer(code):
            if not _COMMAND_START.search(code[:match.start()]):
                continue
            rest = re.split(r"\s#|;|&&|\|\|", code[match.end():])[0]
            commands.append("tce " + rest.strip())
    return commands


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def check_command(command: str, root: argparse.ArgumentParser) -> list[str]:
    """What is wrong with ``command`` (``tce ...``) according to the real parser."""
    try:
        tokens = shlex.split(command)[1:]
    except ValueError:
        tokens = command.split()[1:]
    problems: list[str] = []
    parser, path, options = root, ["tce"], set(_options(root))
    while tokens and tokens[0] == "--config":
        tokens = tokens[2:]
    while tokens:
        sub = _subcommands(parser)
        if sub is None:
            break
        word = tokens[0]
        choices = word.split("|")
        if any(choice not in sub.choices for choice in choices):
            if sub.required or parser is root:
                problems.append(f"'{' '.join(path)}' has no command {word!r}")
            break
        tokens = tokens[1:]
        if len(choices) > 1:
            return problems  # alternatives: each exists; their options are not checked
        parser = sub.choices[word]
        path.append(word)
        options |= _options(parser)
    for token in tokens:
        match = _OPTION.match(token)
        if match and match[1] not in options:
            problems.append(f"'{' '.join(path)}' has no option {match[1]}")
    return problems


def test_the_readme_shows_tce_commands() -> None:
    commands = tce_commands(readme())
    assert len(commands) > 40, "the command extraction found too few tce commands"
    assert "tce verify DIR [--policy P] [--originals] [--ocr] [--json] [--report FILE]" in commands


def test_every_tce_command_in_the_readme_exists() -> None:
    root, warnings = build_parser()
    assert not warnings
    problems = [f"{command}: {problem}" for command in tce_commands(readme())
                for problem in check_command(command, root)]
    assert not problems, "README shows commands the CLI does not have:\n" + "\n".join(problems)


@pytest.mark.parametrize("command", [
    "tce keys rotate", "tce stage2 release 3", "tce verify DIR --no-such-option",
    "tce stage1 media write OUT [--all-completed]",
])
def test_the_command_check_catches_what_does_not_exist(command: str) -> None:
    root, _ = build_parser()
    with contextlib.redirect_stderr(io.StringIO()):
        assert check_command(command, root)
