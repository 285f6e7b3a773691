#!/usr/bin/env bash
# Regenerate docs/screenshots/*.png from a real run: the dashboard's browser test (a real
# API and worker on a temporary SQLite file, Debian's headless Chromium) saves the
# overview, matrix and failed-job pages as it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
export MODELCERT_SCREENSHOTS="$PWD/docs/screenshots"
export MODELCERT_REQUIRE_BROWSER=1
.venv/bin/python -m pytest -q -p no:cacheprovider \
    "tests/browser/test_dashboard_browser.py::test_operator_certifies_sees_a_failure_explained_retries_and_pauses_a_region"
ls -l docs/screenshots/*.png
