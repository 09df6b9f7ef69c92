"""`explain` describes the compiled plan, and the README's policy table is generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.commands.policy import readme_table
from policies.explain import explain, format_markdown
from policies.loader import builtin_policy_names, load_builtin, parse_policy

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- BEGIN policy-table -->", "<!-- END policy-table -->"


def test_readme_policy_table_is_generated_from_explain() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "README lost its generated policy table markers"
    section = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == readme_table().strip(), (
        "README policy table is stale: regenerate it with 'tce policy explain --readme'")


@pytest.mark.parametrize("name", builtin_policy_names())
def test_explain_covers_every_table_row(name: str) -> None:
    policy = load_builtin(name)
    rows = explain(policy)
    assert len(rows) >= 656  # every Table E.1-1 row, patterns included
    tags = {row.tag for row in rows}
    assert {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)", "(gggg,eeee)"} <= tags
    assert "| (0010,0010) |" in format_markdown(policy, rows)


def test_explain_reflects_options_and_overrides() -> None:
    basic = {r.tag: r for r in explain(load_builtin("ps315-basic"))}
    research = {r.tag: r for r in explain(load_builtin("research-age-band-5y"))}
    assert basic["(0010,1010)"].code == "X"
    assert research["(0010,1010)"].code == "age_band"
    assert "5-year band" in research["(0010,1010)"].effect
    assert basic["(0008,0020)"].effect == "dummy date 19000101"
    assert "shifted per patient" in research["(0008,0020)"].effect
    assert basic["(gggg,eeee)"].code == "X"
    assert "known safe" in research["(gggg,eeee)"].effect


def test_explain_of_custom_policy_lists_private_block_override() -> None:
    policy = parse_policy({
        "id": "custom", "version": 1, "description": "d", "base_profile": "ps315-basic",
        "overrides": [{"private_creator": "GEMS_PARM_01", "group": "0043", "action": "keep"}],
    })
    rows = explain(policy)
    assert any('"GEMS_PARM_01"' in row.tag and row.code == "K" for row in rows)
