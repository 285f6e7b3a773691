"""The matrix's sparklines (api/dashboard/charts.py): what the SVG draws for a series."""

from __future__ import annotations

import re

from modelcert.api.dashboard.charts import HEIGHT, PAD, WIDTH, sparkline


def _paths(svg: str) -> list[list[tuple[int, int]]]:
    found = re.search(r'<path d="([^"]*)"', svg)
    if found is None:
        return []
    return [
        [tuple(int(n) for n in point.split()) for point in part.split(" L")]  # type: ignore[misc]
        for part in found.group(1).replace("M", "|M").split("|M")[1:]
    ]


def test_no_value_no_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([None] * 28) == ""


def test_a_flat_line_is_two_points_whatever_its_length() -> None:
    svg = sparkline([100.0] * 28)
    assert _paths(svg) == [[(PAD, PAD), (WIDTH - PAD, PAD)]]
    assert "spark-ok" in svg and "pass rate over 7 d: 100 % → 100 %" in svg


def test_gaps_split_the_line_and_the_dot_is_the_last_value() -> None:
    svg = sparkline([100.0, 100.0, None, None, 50.0, 0.0], "24 h")
    first, second = _paths(svg)
    assert first == [(PAD, PAD), (13, PAD)]
    bottom = HEIGHT - PAD
    assert second[-1] == (WIDTH - PAD, bottom) and second[0][1] == (PAD + bottom) // 2
    assert f'cx="{WIDTH - PAD}" cy="{bottom}"' in svg
    assert "spark-bad" in svg and "pass rate over 24 h: 100 % → 0 % (lowest 0 %)" in svg


def test_one_value_is_a_dot_and_the_tone_follows_the_last_value() -> None:
    svg = sparkline([None, 90.0])
    assert _paths(svg) == [] and "<circle" in svg and "spark-warn" in svg
    assert "pass rate over 7 d: 90 %" in svg
    assert "spark-ok" in sparkline([10.0, 100.0]) and "spark-bad" in sparkline([100.0, 79.9])


def test_values_out_of_range_are_clamped_and_text_is_escaped() -> None:
    svg = sparkline([150.0, -5.0], '<b>"')
    assert _paths(svg) == [[(PAD, PAD), (WIDTH - PAD, HEIGHT - PAD)]]
    assert "<b>" not in svg and "&lt;b&gt;" in svg
