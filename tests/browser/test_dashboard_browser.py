"""The dashboard end to end in a real headless Chromium: an operator logs in, certifies
every deployment, watches live progress, reads why one failed (category and the
provider's message), retries it, pauses and resumes a region; a viewer sees no action.

Set MODELCERT_SCREENSHOTS=<dir> to also save the overview, matrix and failed job pages
there (the README's screenshots come from the demo: scripts/dashboard_screenshots.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Service

pytestmark = pytest.mark.browser
TIMEOUT = 90.0


def wait_until(check: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # the element may not exist yet, or be replaced while read
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def click(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


def log_in(driver: Any, service: Service, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{service.url}/dashboard/")
    wait_until(lambda: "/dashboard/login" in driver.current_url, what="the login page")
    driver.find_element(By.ID, "api_key").send_keys(key)
    click(driver, "#login-button")
    wait_until(lambda: driver.find_elements(By.ID, "who"), what="the logged-in page")


def screenshot(driver: Any, name: str, tmp_path: Path) -> None:
    """Always into the test's directory; into MODELCERT_SCREENSHOTS too when set."""
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    target = os.environ.get("MODELCERT_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(target) / f"{name}.png"))


def test_operator_certifies_sees_a_failure_explained_retries_and_pauses_a_region(
    service: Service, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    log_in(driver, service, service.operator_key)
    assert "alice-ops" in text_of(driver, "#who") and "operator" in text_of(driver, "#who")
    # The page works offline: every stylesheet and script comes from the API itself.
    for element in driver.find_elements(By.CSS_SELECTOR, "link[href], script[src]"):
        source = element.get_attribute("href") or element.get_attribute("src")
        assert source.startswith(service.url + "/dashboard/static/"), source
    # Worker alive on the overview.
    wait_until(lambda: "browser-worker" in text_of(driver, "#workers"), what="the worker row")

    driver.get(f"{service.url}/dashboard/matrix")
    assert "never certified" in text_of(driver, "#matrix")
    click(driver, "button[data-action=certify-all]")
    wait_until(lambda: "/dashboard/jobs/" in driver.current_url, what="the new job's page")
    assert "Queued 4 certification(s)" in text_of(driver, "#flash")
    job_url = driver.current_url

    # Live progress, without a reload: a marker set on this page survives the updates.
    driver.execute_script("window.stillTheSamePage = true;")
    wait_until(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#live-events li[class^=outcome-]")) >= 2,
        what="live progress events",
    )
    assert driver.execute_script("return window.stillTheSamePage === true;")
    assert "tests done" in text_of(driver, "#progress-text")

    # When the job finishes the page reloads itself with the results, the failure
    # explained first. (The failures section alone is no sign of the end: the denied
    # deployment fails within milliseconds, often before the first render of this page.)
    wait_until(
        lambda: "COMPLETED" in text_of(driver, "#job-status"), what="the finished job's page"
    )
    assert driver.current_url == job_url
    failures = text_of(driver, "#failures")
    assert "lab/denied in us-east-1" in failures and "lab/denied in eu-west-1" in failures
    assert "PERMISSION_ERROR" in failures
    assert "have access to the model with the specified model ID" in failures
    assert "SIMULATION" in failures
    assert "COMPLETED" in text_of(driver, "#job-status")
    screenshot(driver, "job-failure", tmp_path)

    # The matrix shows the verdicts; a failed cell leads to its history and its run.
    driver.get(f"{service.url}/dashboard/matrix")
    assert "CERTIFIED" in text_of(driver, "#matrix") and "FAILED" in text_of(driver, "#matrix")
    screenshot(driver, "matrix", tmp_path)
    click(driver, "a[data-cell='lab/denied@us-east-1']")
    wait_until(lambda: driver.find_elements(By.ID, "runs"), what="the run history")
    assert "FAILED" in text_of(driver, "#cert-status")
    click(driver, "#runs a[href*='/runs/']")
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "table.tests"), what="the run")
    tests = text_of(driver, "table.tests")
    assert "PERMISSION_ERROR" in tests and "specified model ID" in tests

    # Retry the failures: a new job, on its own page, with the outcome as a flash message.
    driver.get(job_url)
    click(driver, "button[data-action=retry]")
    wait_until(lambda: driver.current_url != job_url, what="the retry job's page")
    assert "Queued 2 certification(s) retrying job" in text_of(driver, "#flash")
    wait_until(lambda: driver.find_elements(By.ID, "failures"), what="the retry's results")
    assert "Retries" in text_of(driver, "dl.facts")

    # Pause a region: shown on the overview, and it holds new work back.
    driver.get(f"{service.url}/dashboard/")
    click(driver, "button[data-action='pause-eu-west-1']")
    wait_until(lambda: driver.find_elements(By.ID, "flash"), what="the pause flash")
    assert "Region eu-west-1 paused" in text_of(driver, "#flash")
    assert "PAUSED" in text_of(driver, "#region-eu-west-1")
    assert "PAUSED" not in text_of(driver, "#region-us-east-1")
    driver.get(f"{service.url}/dashboard/certifications/1/eu-west-1")
    click(driver, "button[data-action=recertify]")
    wait_until(lambda: "/dashboard/jobs/" in driver.current_url, what="the re-certify job")
    paused_job = driver.current_url
    time.sleep(1.0)  # the worker polls every 0.1 s: ten polls, it would have started by now
    driver.get(paused_job)
    assert "QUEUED" in text_of(driver, "#job-status")
    driver.get(f"{service.url}/dashboard/")
    screenshot(driver, "overview", tmp_path)
    click(driver, "button[data-action='resume-eu-west-1']")
    wait_until(lambda: "Region eu-west-1 resumed" in text_of(driver, "#flash"), what="resume")
    driver.get(paused_job)
    wait_until(lambda: "COMPLETED" in text_of(driver, "#job-status"), what="the job to run")

    # The Jobs page finds the failed job by requester and status.
    driver.get(f"{service.url}/dashboard/jobs?requester=alice-ops&status=COMPLETED")
    assert "3 job(s)" in text_of(driver, "#job-count")

    # Logging out ends the session.
    click(driver, ".who button")
    wait_until(lambda: "/dashboard/login" in driver.current_url, what="the login page")
    driver.get(f"{service.url}/dashboard/matrix")
    assert "/dashboard/login" in driver.current_url


def test_a_viewer_sees_no_action_buttons(service: Service, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{service.url}/dashboard/login")
    driver.find_element(By.ID, "api_key").send_keys("mc_not-a-real-key-at-all-000000000000000")
    click(driver, "#login-button")
    assert "Invalid or revoked API key" in text_of(driver, "#login-error")

    log_in(driver, service, service.viewer_key)
    assert "viewer" in text_of(driver, "#who")
    for path in ("/", "/matrix", "/jobs"):
        driver.get(f"{service.url}/dashboard{path}")
        assert driver.find_elements(By.CSS_SELECTOR, "button.action") == [], path
        assert driver.find_elements(By.CSS_SELECTOR, "input[name=csrf_token]") == [], path
