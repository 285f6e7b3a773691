"""One `modelcert` command line run in the test process (`modelcert.cli.run_command`),
its output read from buffers of its own: not capsys, since an in-process worker's log
handlers must not be left on a stream closed at the end of the test."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from typing import Any

from modelcert.cli import run_command
from modelcert.obs.logging import configure_logging
from modelcert.settings import get_settings


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def one_error(self, *fragments: str) -> str:
        """Exit 2 with exactly one `error: …` line on stderr holding every fragment."""
        assert "Traceback" not in self.stdout + self.stderr
        assert self.code == 2, (self.code, self.stdout, self.stderr)
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(*args: str) -> Result:
    """Run one command line with fresh settings (read from the environment now)."""
    get_settings.cache_clear()
    out, err = io.StringIO(), io.StringIO()
    process_stderr = sys.stderr
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_command(args)
    finally:
        get_settings.cache_clear()
        # The command pointed the logs at `err`: back to the process's stderr.
        assert sys.stderr is process_stderr
        configure_logging(json_lines=False, level="INFO")
    return Result(code, out.getvalue(), err.getvalue())
