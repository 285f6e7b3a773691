"""Logs carry colour codes only on a terminal: a worker's log file (`modelcert up` and
`demo` write them under .modelcert/logs) or a pipe gets none, nor does a terminal with
NO_COLOR set (https://no-color.org)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

LOG_PROBE = """
from modelcert.obs.logging import configure_logging, log_event
configure_logging(json_lines=False, level="INFO")
log_event("active", job="j1", region="us-east-1")
"""


def _log_to(stderr: int, **env: str) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    subprocess.run(
        [sys.executable, "-c", LOG_PROBE],
        stderr=stderr,
        stdout=subprocess.DEVNULL,
        env={**clean, **env},
        timeout=60,
        check=True,
    )


def test_a_log_file_has_no_colour_codes(tmp_path: Path) -> None:
    path = tmp_path / "worker-1.log"
    with open(path, "wb") as log_file:
        _log_to(log_file.fileno())
    text = path.read_text()
    assert "active" in text and "j1" in text
    assert "\x1b[" not in text


def _log_to_terminal(**env: str) -> str:
    controller, terminal = pty.openpty()
    try:
        _log_to(terminal, **env)
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal side is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)


def test_a_terminal_gets_colours_unless_no_color() -> None:
    assert "\x1b[" in _log_to_terminal()
    plain = _log_to_terminal(NO_COLOR="1")
    assert "active" in plain and "\x1b[" not in plain
