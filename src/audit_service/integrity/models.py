"""What the tamper-evident log stores beside the leaves: tiles, checkpoints, keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Identity, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from audit_service.audit_log.models import BigIntId
from audit_service.kit.models import Base, UTCDateTime

KEY_KIND_LENGTH = 10
KEY_NAME_LENGTH = 300


class IntegrityTile(Base):
    """A C2SP tlog-tiles tile: `data` is its hashes, 32 bytes each. A partial tile grows in
    place (a trigger lets an UPDATE only extend it) until it is full (256 hashes), then it
    never changes; a partial tile at width W is the first W hashes of its row."""

    __tablename__ = "integrity_tile"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class IntegrityCheckpoint(Base):
    """Every signed checkpoint, newest last (append-only): a C2SP signed note. Re-issues of
    the same tree size (idle co-signatures with a fresh timestamp) are rows of their own."""

    __tablename__ = "integrity_checkpoint"

    id: Mapped[int] = mapped_column(BigIntId, Identity(always=False), primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IntegrityKey(Base):
    """Commitment keys (leaf entry v1): kind `day` (name YYYY-MM-DD, for IP and user agent)
    or `subject` (name = the data subject, for actor fields). Erasing a key anonymises what
    it committed to without changing a leaf; it is never updated."""

    __tablename__ = "integrity_key"

    kind: Mapped[str] = mapped_column(String(KEY_KIND_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(KEY_NAME_LENGTH), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IntegrityLog(Base):
    """The log's identity (one row, written once): its checkpoint origin."""

    __tablename__ = "integrity_log"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(String(KEY_NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
