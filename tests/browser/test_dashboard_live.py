"""The dashboard as a person uses it, in a real headless Chromium against a real API and
worker: the Jobs filter submitted the way the browser submits it (empty fields
included), and a job's page that keeps itself up to date (header, rows, timeline) while
the job runs, without a reload, then says the job completed with failures; and the API's
/docs rendered from the API's own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import REGIONS, Service
from tests.browser.test_dashboard_browser import click, log_in, screenshot, text_of, wait_until

pytestmark = pytest.mark.browser


def test_the_jobs_filter_and_a_job_page_that_follows_its_job(
    service: Service, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    log_in(driver, service, service.operator_key)

    # Hold the work back, so that the job's page is first seen QUEUED.
    for region in REGIONS:
        driver.get(f"{service.url}/dashboard/")
        click(driver, f"button[data-action='pause-{region}']")
        wait_until(lambda r=region: f"Region {r} paused" in text_of(driver, "#flash"))
    driver.get(f"{service.url}/dashboard/matrix")
    click(driver, "button[data-action=certify-all]")
    wait_until(lambda: "/dashboard/jobs/" in driver.current_url, what="the new job's page")
    job_url = driver.current_url
    job_id = job_url.rsplit("/", 1)[1]

    # The Jobs filter, every field empty as the browser sends it: the list, not JSON.
    driver.get(f"{service.url}/dashboard/jobs")
    click(driver, "#job-filters button[type=submit]")
    wait_until(lambda: "date_from=" in driver.current_url, what="the submitted filter")
    assert "date_from=&date_to=" in driver.current_url
    assert job_id[:8] in text_of(driver, "#jobs")
    assert '"detail"' not in driver.page_source
    # One date only, and the shown name of a deployment in the search box.
    driver.execute_script("document.querySelector('[name=date_from]').value = '2020-01-01';")
    driver.find_element(By.NAME, "q").send_keys("lab/stea")
    click(driver, "#job-filters button[type=submit]")
    wait_until(lambda: "q=lab%2Fstea" in driver.current_url, what="the search")
    assert "date_from=2020-01-01&date_to=" in driver.current_url
    assert job_id[:8] in text_of(driver, "#jobs")

    # The job's page, queued; a marker on it tells whether it was reloaded.
    driver.get(job_url)
    assert "QUEUED" in text_of(driver, "#job-status")
    assert "updated" in text_of(driver, "#live-stamp")
    driver.execute_script("window.stillTheSamePage = true;")
    page_tab = driver.current_window_handle

    # Another tab resumes the regions; the job's page follows by itself.
    driver.switch_to.new_window("tab")
    for region in REGIONS:
        driver.get(f"{service.url}/dashboard/")
        click(driver, f"button[data-action='resume-{region}']")
        wait_until(lambda r=region: f"Region {r} resumed" in text_of(driver, "#flash"))
    driver.close()
    driver.switch_to.window(page_tab)

    def running_here() -> bool:
        same = driver.execute_script("return window.stillTheSamePage === true;")
        rows = text_of(driver, "#job-certifications")
        return bool(same and "RUNNING" in text_of(driver, "#job-status") and "QUEUED" not in rows)

    wait_until(running_here, what="the header and rows to follow the running job")
    assert "started on browser-worker" in text_of(driver, "#timeline")
    assert "tests done" in text_of(driver, "#progress-text")
    assert "certifications finished" in text_of(driver, "#cert-progress")
    screenshot(driver, "job-running", tmp_path)

    # Finished: the page shows it completed with failures (the denied deployment).
    wait_until(
        lambda: "COMPLETED WITH FAILURES" in text_of(driver, "#job-status"),
        what="the finished job",
    )
    assert driver.current_url == job_url
    assert "PERMISSION_ERROR" in text_of(driver, "#failures")

    # Each failed matrix cell names its decisive category.
    driver.get(f"{service.url}/dashboard/matrix")
    for region in REGIONS:
        cell = text_of(driver, f"a[data-cell='lab/denied@{region}']")
        assert "PERMISSION_ERROR" in cell and "UNAVAILABLE" not in cell, cell

    # The API's docs render from the API's own files (Swagger UI is vendored, no CDN).
    driver.get(f"{service.url}/docs")
    wait_until(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, ".opblock")) > 10,
        what="Swagger UI's operations",
    )
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name);"
    )
    assert loaded and all(url.startswith(service.url) for url in loaded), loaded
    assert "certification-queue" in text_of(driver, ".swagger-ui")

    # The overview refreshes itself while shown and pauses while the tab is hidden (the
    # page's visibility is set as the browser would, then the event it sends).
    driver.get(f"{service.url}/dashboard/")
    wait_until(lambda: text_of(driver, "#live-stamp").startswith("updated"))
    state = "return document.getElementById('live-stamp').dataset.state;"
    wait_until(lambda: driver.execute_script(state) in ("scheduled", "fetching"))
    hide = """
        const hidden = arguments[0];
        Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
        Object.defineProperty(document, "visibilityState",
            {configurable: true, get: () => (hidden ? "hidden" : "visible")});
        document.dispatchEvent(new Event("visibilitychange"));
    """
    driver.execute_script(hide, True)
    wait_until(lambda: driver.execute_script(state) == "paused", what="the paused refresh")
    assert "paused while the tab is hidden" in text_of(driver, "#live-stamp")
    driver.execute_script(hide, False)
    wait_until(lambda: driver.execute_script(state) in ("scheduled", "fetching"))
    assert "paused" not in text_of(driver, "#live-stamp")

    # Dark when the system is, and no page wider than an 800 px window (tables scroll in
    # their own box).
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    driver.get(f"{service.url}/dashboard/matrix")
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor;")
    assert background == "rgb(13, 17, 23)", background
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.set_window_size(800, 900)
    for path in ("/", "/matrix", "/jobs", job_url.split("/dashboard", 1)[1]):
        driver.get(f"{service.url}/dashboard{path}")
        wide = driver.execute_script("return document.documentElement.scrollWidth;")
        inner = driver.execute_script("return window.innerWidth;")
        assert wide <= inner, (path, wide, inner)
