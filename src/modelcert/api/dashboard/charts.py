"""The matrix's sparklines: a pass-rate series drawn as a small inline SVG, server-side.

Inline SVG rather than the chart library the certification page uses (uPlot): a fleet
matrix has up to a thousand cells, and a chart instance per cell would cost the browser
far more than a polyline each; drawn here, a sparkline also survives the page's live
refresh (which swaps the table's HTML) and needs no script at all.

A healthy pair is a flat line at 100 %: points on a straight run between their
neighbours are left out, so that such a sparkline is two points, not thirty, and a
1,000-cell page stays small (docs/benchmarks.md B9).

The series behind them are kept a minute per API process (`SparklineCache`), keyed by
what the matrix shows and by a fingerprint of the runs in the range that changes as soon
as a run starts or finishes: the page refreshes itself every 10 s, and reading a week of
6-hourly runs of a 1,000-cell fleet costs about 100 ms; the fingerprint costs a few."""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelcert.reports import trends
from modelcert.store.models import CertificationRun

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
    return _sparkline(tuple(values), span_label)


@functools.lru_cache(maxsize=4096)  # a healthy fleet is many cells with the same line
def _sparkline(values: tuple[float | None, ...], span_label: str) -> Markup:
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
    # Size, frame and colours come from the stylesheet (svg.spark): bytes per cell count.
    return Markup(
        f'<svg class="spark spark-{_tone(last)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
        f"<title>{escape(text)}</title>{line}"
        f'<circle cx="{last_x}" cy="{last_y}" r="2"/></svg>'
    )


class SparklineCache:
    """`trends.cell_series` of the matrix, reused while nothing it reads has changed: same
    deployments and regions shown, same runs in the range (count, newest id, newest
    completion), and for at most `ttl_s` (bucket edges move with the clock). Thread-safe:
    the dashboard's routes run in a thread pool."""

    def __init__(self, range_name: str, ttl_s: float = 60.0, size: int = 16) -> None:
        self.range_name = range_name
        self.ttl_s = ttl_s
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def cells(
        self, session: Session, deployment_ids: Sequence[int], regions: Sequence[str], now: datetime
    ) -> dict[str, Any]:
        since = now - trends.parse_range(self.range_name).span
        fingerprint = session.execute(
            select(
                func.count(), func.max(CertificationRun.id), func.max(CertificationRun.completed_at)
            ).where(CertificationRun.started_at >= since)
        ).one()
        key = (tuple(deployment_ids), tuple(regions), tuple(fingerprint))
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0] > time.monotonic():
                self._entries.move_to_end(key)
                return found[1]
        cells: dict[str, Any] = trends.cell_series(
            session, self.range_name, now=now, deployment_ids=deployment_ids, regions=regions
        )["cells"]
        with self._lock:
            self._entries[key] = (time.monotonic() + self.ttl_s, cells)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return cells
