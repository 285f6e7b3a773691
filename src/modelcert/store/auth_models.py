"""ORM models for access: API keys (who may call the HTTP API, with which role) and the
dashboard sessions an API key is exchanged for.

The plain key is never stored: only its first characters (to find the row and to show
which key is which) and a hash of the whole key. A session row keeps the SHA-256 of the
browser's random token, never the token.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelcert.store.models import Base, utcnow

# Keys look like `mc_<43 url-safe characters>`; this many characters after the tag are kept.
KEY_PREFIX_LENGTH = 8
ROLE_NAMES = ("viewer", "operator", "admin")


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "role IN ({})".format(", ".join(f"'{name}'" for name in ROLE_NAMES)), name="role"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Not unique: two keys may share a prefix (unlikely, not impossible); the hash decides.
    prefix: Mapped[str] = mapped_column(String(KEY_PREFIX_LENGTH), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the whole key
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        # Spelled out so that the hash never lands in a log line or a traceback.
        return f"ApiKey(name={self.name!r}, prefix={self.prefix!r}, role={self.role!r})"


class DashboardSession(Base):
    """A dashboard login: the browser holds the token, the row its hash and CSRF token."""

    __tablename__ = "dashboard_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(Integer, ForeignKey("api_keys.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
