"""Every table of the application, in one MetaData: what migrations are compared with.

The ORM models live in one module per area (`models`: catalog, jobs and verdicts;
`auth_models`: API keys and dashboard sessions; `worker_models`: heartbeats, leases and
paused regions; `audit`: the operators' audit log; `notifications`: subscriptions and
their deliveries), all on `models.Base`. Importing them here is what puts their tables
on `METADATA`; a table added in a new module must be imported here too (the migration
test fails otherwise: autogenerate would see a table with no model and propose to drop
it).
"""

from __future__ import annotations

from modelcert.store import audit, auth_models, models, notifications, pacing, worker_models

METADATA = models.Base.metadata

MODEL_MODULES = (models, auth_models, worker_models, pacing, audit, notifications)
