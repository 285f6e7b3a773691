"""The matrix's sparklines: a pass-rate series drawn as a small inline SVG, server-side.

Inline SVG rather than the chart library the certification page uses (uPlot): a fleet
matrix has up to a thousand cells, and a chart instance per cell would cost the browser
far more than a polyline each; drawn here, a sparkline also survives the page's live
refresh (which swaps the table's HTML) and needs no script at all.

A healthy pair is a flat line at 100 %: points on a straight run between their
neighbours are left out, so that such a sparkline is two points, not thirty, and a
1,000-cell page stays small (docs/benchmarks.md B9)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 60
HEIGHT = 16
PAD = 2  # room for the last point's dot


def _points(values: Sequence[float | None]) -> list[list[tuple[int, int]]]:
    """The runs of consecutive values as (x, y) pixel points, gaps splitting them; y is
    PAD at 100 % and HEIGHT - PAD at 0 % (SVG's y grows downwards)."""
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)
    span = HEIGHT - 2 * PAD
    runs: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for index, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
            continue
        clamped = min(max(value, 0.0), 100.0)
        current.append((round(PAD + index * step), round(PAD + span * (100 - clamped) / 100)))
    if current:
        runs.append(current)
    return [_without_collinear(run) for run in runs]


def _without_collinear(run: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`run` less the points that lie on a horizontal line between their neighbours."""
    kept = [run[0]]
    for before, point, after in zip(run, run[1:], run[2:], strict=False):
        if not (before[1] == point[1] == after[1]):
            kept.append(point)
    if len(run) > 1:
        kept.append(run[-1])
    return kept


def _tone(value: float) -> str:
    return "ok" if value >= 100 else "warn" if value >= 80 else "bad"


def sparkline(values: Sequence[float | None], span_label: str = "7 d") -> Markup:
    """An SVG sparkline of pass rates in % (None: no test executed in that bucket); empty
    when no bucket has a value. Its title reads the first and last values."""
    known = [v for v in values if v is not None]
    if not known:
        return Markup("")
    runs = _points(values)
    path = " ".join(
        "M" + " L".join(f"{x} {y}" for x, y in run) if len(run) > 1 else "" for run in runs
    ).strip()
    last_x, last_y = runs[-1][-1]
    first, last = known[0], known[-1]
    text = (
        f"pass rate over {span_label}: {first:g} %"
        if len(known) == 1
        else f"pass rate over {span_label}: {first:g} % → {last:g} % (lowest {min(known):g} %)"
    )
    line = f'<path d="{path}"/>' if path else ""
    return Markup(
        f'<svg class="spark spark-{_tone(last)}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(text)}">'
        f'<title>{escape(text)}</title><rect width="{WIDTH}" height="{HEIGHT}" rx="2"/>{line}'
        f'<circle cx="{last_x}" cy="{last_y}" r="2"/></svg>'
    )
