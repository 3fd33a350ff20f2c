"""The live view's closing table."""

from __future__ import annotations

from rich.console import Console

from rankprune.live import summary_table


def test_summary_table_shows_every_depth():
    depths = {
        "10": {"depth": 10, "stop_reason": "max-iterations", "iterations": 8, "widths": [9] * 10, "initial_widths": [64] * 10,
               "parameters": 1234, "initial_test_acc": 0.5, "test_acc": 0.25, "cumulative_seconds": 1.0, "cumulative_flops": 2e12},
        "2": {"depth": 2, "stop_reason": "fixed-point", "iterations": 3, "widths": [30, 20], "initial_widths": [64, 64],
              "parameters": 4321, "initial_test_acc": 0.9, "test_acc": 0.875, "cumulative_seconds": 3.5, "cumulative_flops": 1e12},
    }
    console = Console(record=True, width=200)
    console.print(summary_table(depths))
    text = console.export_text()
    assert "fixed-point" in text and "max-iterations" in text
    assert "[30, 20]" in text and "128 -> 50 (2.6x)" in text and "4,321" in text
    assert "0.9000 -> 0.8750" in text
    assert text.index("fixed-point") < text.index("max-iterations")  # depths in numeric order: 2 before 10
