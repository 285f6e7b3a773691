"""The migrations and the ORM models describe the same schema, on SQLite and PostgreSQL:
after `upgrade`, Alembic's autogenerate finds nothing to change. It runs in a fresh
interpreter that imports only `modelcert.store.schema`, as the migrations' env does: a
table whose model module `schema` forgets would show up as one to drop."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import Engine

from modelcert.store.schema import MODEL_MODULES

AUTOGENERATE = """
import json, sys, tempfile
from pathlib import Path
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from dbos import DBOS
from sqlalchemy import create_engine, inspect
from modelcert.store.db import normalise_url
from modelcert.store.schema import METADATA as metadata

with tempfile.TemporaryDirectory() as folder:  # DBOS's own tables, to leave out
    probe_url = f"sqlite:///{Path(folder) / 'dbos-only.db'}"
    DBOS.migrate(probe_url)
    probe = create_engine(probe_url)
    queue_tables = set(inspect(probe).get_table_names())
    probe.dispose()

engine = create_engine(normalise_url(sys.argv[1]))
def ours(name, type_, parent):
    return type_ != "table" or name not in queue_tables
with engine.connect() as connection:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": ours}
    )
    diff = compare_metadata(context, metadata)
    tables = set(inspect(connection).get_table_names()) - queue_tables - {"alembic_version"}
unmodelled = sorted(tables - set(metadata.tables))
print(json.dumps({"diff": [repr(d) for d in diff], "unmodelled": unmodelled}))
"""


def test_autogenerate_finds_no_difference_after_the_migrations(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", AUTOGENERATE, url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"diff": [], "unmodelled": []}


def test_every_model_module_is_in_the_store() -> None:
    assert {m.__name__.rsplit(".", 1)[0] for m in MODEL_MODULES} == {"modelcert.store"}
