"""Regenerate docs/screenshots/*.png from a real run of the demo.

Starts `modelcert demo --serve` on a temporary SQLite file (the API and worker processes
certify the SIMULATED demo catalog), logs in to the dashboard with the operator key the
demo prints, and saves the overview, the matrix, a failed job and a failed run, as seen
by Debian's headless Chromium (/usr/bin/chromium, /usr/bin/chromedriver).

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
            driver.save_screenshot(str(out / "overview.png"))
            driver.get(f"{base}/matrix")
            driver.save_screenshot(str(out / "matrix.png"))
            driver.find_element(
                By.CSS_SELECTOR, "a[data-cell='sim/granite-badkey@us-east-1']"
            ).click()
            driver.find_element(By.CSS_SELECTOR, "#runs a[href*='/runs/']").click()
            driver.save_screenshot(str(out / "run-failure.png"))
            driver.find_element(By.CSS_SELECTOR, "a[href*='/dashboard/jobs/']").click()
            driver.save_screenshot(str(out / "job-failure.png"))
        finally:
            driver.quit()
            demo.send_signal(signal.SIGINT)
            demo.wait(timeout=60)
    for path in sorted(out.glob("*.png")):
        print(f"saved {path}")


if __name__ == "__main__":
    main()
