"""Declarative base shared by every domain: naming convention and UTC-aware timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that only ever accepts and returns aware UTC datetimes.

    SQLite has no time zone type: values are stored as UTC and tagged UTC again on the way
    out, so both dialects hand the application the same kind of object.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database layer")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Objects a migration creates that no model maps, by table (columns and indexes): the
# model/migration comparison skips them. (audit_event.txid is Postgres-only: the ORM never
# writes it — its default does — and only the log's sequencer reads it, through SQL.)
DATABASE_ONLY: dict[str, frozenset[str]] = {}


def include_object(dialect: str) -> Any:
    """Alembic's `include_object` for this metadata on `dialect`."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        postgres_only = type_ == "index" and bool(getattr(obj, "info", {}).get("postgresql_only"))
        if postgres_only and dialect != "postgresql":
            return False
        table = getattr(obj, "table", None)
        if reflected and other is None and table is not None:
            return name not in DATABASE_ONLY.get(table.name, frozenset())
        return True

    return include
