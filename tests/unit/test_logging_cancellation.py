"""A cancelled certification is an operator's decision: DBOS's ERROR-with-traceback for a
cancelled workflow is dropped (the engine logs an info event instead); other errors of
DBOS's logger still show."""

from __future__ import annotations

import logging

from dbos._error import DBOSAwaitedWorkflowCancelledError

from modelcert.obs.logging import configure_logging


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_cancelled_workflow_is_not_logged_as_an_error() -> None:
    configure_logging(json_lines=True)
    logger = logging.getLogger("dbos")
    collected = _Collect()
    logger.addHandler(collected)
    try:
        try:
            raise DBOSAwaitedWorkflowCancelledError("job:1@us-east-1")
        except DBOSAwaitedWorkflowCancelledError as error:
            logger.error("Exception encountered in asynchronous workflow:", exc_info=error)
        try:
            raise RuntimeError("a real fault")
        except RuntimeError as error:
            logger.error("Exception encountered in asynchronous workflow:", exc_info=error)
    finally:
        logger.removeHandler(collected)
    records = collected.records
    assert len(records) == 1 and records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)
