"""Regenerate docs/screenshots/*.png from a real run of the demo.

Starts `modelcert demo --serve` on a temporary SQLite file (the API and worker processes
certify the SIMULATED demo catalog), logs in to the dashboard with the operator key the
demo prints, and saves every page as seen by Debian's headless Chromium
(/usr/bin/chromium, /usr/bin/chromedriver): the overview, the matrix (whole and filtered
to failures), a certification's history, a failed run, a failed job, a deployment's
trends and a comparison of its runs (after two re-certifications from its page), the jobs
list, the export page, the suites and the demo's suite, a run with the suite's tests, the
cost page, the audit log (after a region paused and resumed) and the API's
/docs; then the overview and the matrix in dark mode
and the overview, the matrix and the job at 800 px wide.

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium.webdriver.common.by import By

# The repository root, for the Chromium set-up the browser tests use as well.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.chromium import start_chromium
from tests.support.workers import free_port

KEY_LINE = re.compile(r"operator key for this session: (mc_\S+)")


def start_demo(workdir: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """`modelcert demo --serve`; returns the process and the operator key it printed."""
    env = {
        **os.environ,
        "MODELCERT_DATABASE_URL": f"sqlite:///{workdir}/demo.db",
        # Workers' health ports from a free one, not the default that a running service holds.
        "WORKER_HEALTH_PORT": str(free_port()),
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "modelcert", "demo", "--serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    for line in demo.stdout:
        print(line, end="")
        found = KEY_LINE.search(line)
        if found:
            return demo, found.group(1)
    raise SystemExit(f"the demo exited ({demo.wait()}) without printing its key")


def wait_for_job(driver: object, timeout: float = 120) -> None:
    """On the job's page an action lands on, until the job has finished."""
    deadline = time.monotonic() + timeout
    time.sleep(0.5)
    job = driver.current_url  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        driver.get(job)  # type: ignore[attr-defined]
        status = driver.find_element(By.ID, "job-status").text  # type: ignore[attr-defined]
        if "COMPLETED" in status or "FAILED" in status:
            return
        time.sleep(1.0)
    raise SystemExit(f"{job} did not finish in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    out: Path = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    with tempfile.TemporaryDirectory(prefix="modelcert-shots-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        demo, key = start_demo(workdir, port)
        base = f"http://127.0.0.1:{port}/dashboard"
        driver = start_chromium(workdir / "profile")
        try:
            driver.get(f"{base}/login")
            driver.find_element(By.ID, "api_key").send_keys(key)
            driver.find_element(By.ID, "login-button").click()
            time.sleep(1.0)
            shot = lambda name: driver.save_screenshot(str(out / f"{name}.png"))  # noqa: E731
            size = driver.get_window_size()
            window = (size["width"], size["height"])
            shot("overview")
            driver.get(f"{base}/matrix")
            shot("matrix")
            driver.get(f"{base}/matrix?status=FAILED&sort=failed")
            shot("matrix-failed")
            driver.get(f"{base}/matrix")
            driver.find_element(
                By.CSS_SELECTOR, "a[data-cell='sim/granite-badkey@us-east-1']"
            ).click()
            shot("certification")
            driver.find_element(By.CSS_SELECTOR, "#runs a[href*='/runs/']").click()
            shot("run-failure")
            driver.find_element(By.CSS_SELECTOR, "a[href*='/dashboard/jobs/']").click()
            job = driver.current_url
            shot("job-failure")
            # Trends and a comparison need more than the demo's one run: two more runs
            # of a deployment, from its page's button, as an operator would.
            driver.get(f"{base}/matrix")
            driver.find_element(
                By.CSS_SELECTOR, "a[data-cell='sim/cirrus-flaky@us-east-1']"
            ).click()
            flaky = driver.current_url
            for _ in range(2):
                driver.get(flaky)
                driver.find_element(By.CSS_SELECTOR, "button[data-action=recertify]").click()
                wait_for_job(driver)
            driver.set_window_size(1400, 1300)
            driver.get(flaky)
            time.sleep(0.5)  # uPlot draws after the page loads
            shot("certification-trends")
            driver.find_element(By.CSS_SELECTOR, "#runs a[href*='/runs/']").click()
            driver.find_element(By.ID, "compare-previous").click()
            shot("compare")
            driver.set_window_size(*window)
            driver.get(f"{base}/jobs")
            shot("jobs")
            driver.get(f"{base}/export")
            shot("export")
            # The demo's own suite: its pages, and a run of the deployment it attaches to
            # (the battery and the suite's tests, their assertions and costs).
            driver.get(f"{base}/suites")
            shot("suites")
            driver.get(f"{base}/suites/demo-support")
            shot("suite")
            driver.get(f"{base}/matrix")
            driver.find_element(
                By.CSS_SELECTOR, "a[data-cell='sim/aurora-fast@us-east-1']"
            ).click()
            driver.find_element(By.CSS_SELECTOR, "#runs a[href*='/runs/']").click()
            driver.set_window_size(1400, 2000)
            shot("run-suite")
            driver.set_window_size(*window)
            driver.get(f"{base}/cost")
            shot("cost")
            # Something in the audit log: a region paused and resumed from the overview.
            for action in ("pause", "resume"):
                driver.get(f"{base}/")
                driver.find_element(
                    By.CSS_SELECTOR, f"button[data-action='{action}-ap-southeast-1']"
                ).click()
                time.sleep(0.5)
            driver.get(f"{base}/audit")
            shot("audit")
            driver.get(f"http://127.0.0.1:{port}/docs")
            time.sleep(2.0)  # Swagger UI renders from its own files
            shot("api-docs")
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
            for name, path in (("overview-dark", "/"), ("matrix-dark", "/matrix")):
                driver.get(base + path)
                shot(name)
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
            driver.set_window_size(800, 1000)
            for name, url in (
                ("overview-800px", f"{base}/"),
                ("matrix-800px", f"{base}/matrix"),
                ("job-800px", job),
            ):
                driver.get(url)
                shot(name)
        finally:
            driver.quit()
            demo.send_signal(signal.SIGINT)
            demo.wait(timeout=60)
    for path in sorted(out.glob("*.png")):
        print(f"saved {path}")


if __name__ == "__main__":
    main()
