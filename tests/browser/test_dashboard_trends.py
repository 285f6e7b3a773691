"""Trends and comparisons in real Chromium, on runs a real worker made: the matrix's
sparklines, the certification page's uPlot charts (drawn from the vendored file, nothing
from another host) and its range links, and the comparison of a run with the one before
it, reached from the run's page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.conftest import Service
from tests.browser.test_dashboard_browser import click, log_in, screenshot, text_of, wait_until


def _finish(driver: Any) -> None:
    """Wait on the job's page (where an action lands) until the job has finished."""
    wait_until(lambda: "/dashboard/jobs/" in driver.current_url, what="the job's page")
    job = driver.current_url
    wait_until(
        lambda: (driver.get(job), "COMPLETED" in text_of(driver, "#job-status"))[1],
        what="the job to finish",
    )


def test_sparklines_trend_charts_and_the_comparison_with_the_run_before(
    service: Service, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    log_in(driver, service, service.operator_key)
    driver.get(f"{service.url}/dashboard/matrix")
    click(driver, "button[data-action=certify-all]")
    _finish(driver)
    steady = f"{service.url}/dashboard/certifications/1/us-east-1"
    driver.get(steady)
    click(driver, "button[data-action=recertify]")
    _finish(driver)

    # The matrix: a pass-rate sparkline in each certified cell, its reading in its title.
    driver.get(f"{service.url}/dashboard/matrix")
    spark = driver.find_element(By.CSS_SELECTOR, "a[data-cell='lab/steady@us-east-1'] svg.spark")
    assert spark.find_element(By.TAG_NAME, "title").get_attribute("textContent") == (
        "pass rate over 7 d: 100 %"
    )
    assert "spark-ok" in (spark.get_attribute("class") or "")
    denied = driver.find_element(
        By.CSS_SELECTOR, "a[data-cell='lab/denied@us-east-1'] svg.spark"
    )  # refused at its first test, which counts as failed
    assert denied.find_element(By.TAG_NAME, "title").get_attribute("textContent") == (
        "pass rate over 7 d: 0 %"
    )
    assert "spark-bad" in (denied.get_attribute("class") or "")
    screenshot(driver, "matrix-sparklines", tmp_path)

    # The certification page: both charts drawn by uPlot, with their legends, and the
    # summary beside them (two runs of 12 passed tests).
    driver.get(steady)
    wait_until(
        lambda: (
            driver.execute_script("return document.getElementById('chart-latency').dataset.drawn;")
            == "true"
        ),
        what="the latency chart",
    )
    for chart in ("#chart-latency", "#chart-pass"):
        canvas = driver.find_element(By.CSS_SELECTOR, f"{chart} canvas")
        assert canvas.size["width"] > 200 and canvas.size["height"] > 100, canvas.size
    legend = text_of(driver, "#chart-latency .u-legend")
    assert all(name in legend for name in ("latency p50", "latency p95", "TTFT p50")), legend
    assert "pass rate" in text_of(driver, "#chart-pass .u-legend")
    summary = text_of(driver, "#trend-summary")
    assert "100 %" in summary and "CERTIFIED × 2" in summary, summary
    steps = driver.find_elements(By.CSS_SELECTOR, "#trend-verdicts li")
    assert len(steps) == 28 and "v-certified" in (steps[-1].get_attribute("class") or "")
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name);"
    )
    assert any(url.endswith("/static/uplot.min.js") for url in loaded), loaded
    assert all(url.startswith(service.url) for url in loaded), loaded
    screenshot(driver, "certification-trends", tmp_path)

    # Another range: the link keeps the page and changes the steps.
    click(driver, ".trend-ranges a[href='?range=24h#trends']")
    wait_until(lambda: "range=24h" in driver.current_url, what="the 24 h range")
    assert "over the last 24 h" in text_of(driver, "#trends")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#trend-verdicts li")) == 24

    # The newest run's page links to the comparison with the run before it.
    click(driver, "#runs a[href*='/runs/']")
    click(driver, "#compare-previous")
    wait_until(lambda: "/runs/compare" in driver.current_url, what="the comparison")
    assert "lab/steady" in text_of(driver, "h1")
    rows = driver.find_elements(By.CSS_SELECTOR, "#compare-tests tbody tr")
    assert len(rows) >= 12, len(rows)
    assert "CERTIFIED" in text_of(driver, "#compare-summary")
    screenshot(driver, "compare", tmp_path)
