"""The cell's code as rules read and rewrite it (analysis/cell.py)."""

from __future__ import annotations

from memprofile.analysis.cell import CellCode


def test_a_call_is_rewritten_in_place_also_after_non_ascii_text_on_its_line():
    # ast's columns are UTF-8 byte offsets: "é" is two bytes
    cell = CellCode('%%memprofile\nlabel = "é"; opt.zero_grad(set_to_none=False)\nopt.step()\n')
    call = cell.calls_named("zero_grad")[0]
    assert (
        cell.with_replaced([(call.node, "opt.zero_grad(set_to_none=True)")])
        == 'label = "é"; opt.zero_grad(set_to_none=True)\nopt.step()'
    )


def test_a_call_over_several_lines_is_not_rewritten():
    cell = CellCode("opt = torch.optim.Adam(\n    model.parameters())\n")
    assert cell.with_replaced([(cell.assigned_call("opt").node, "x")]) is None


def test_magics_are_blanked_and_names_and_calls_read():
    cell = CellCode("%time x = 1\nfor batch in loader:\n    losses.append(model(batch))\n")
    assert cell.parsed and cell.bound == {"batch": 2}
    assert [c.func for c in cell.calls_named("append")] == ["losses.append"]
