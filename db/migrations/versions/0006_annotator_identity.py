"""One person, one annotator: annotators get a case- and space-insensitive identity (``key``), unique.

Annotators whose names collide under the new rule (``Alice`` and `` alice``) are merged into the oldest of them: their
votes, skips and person changes move to it (the append-only triggers are lifted for that one update and put back),
a skip both had of the same face is kept once, and the other rows go. The kept annotator keeps its name for display.
The rule is written out here as :func:`db.repo.annotator_key` has it (a migration does not follow later code).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 06:00:00

"""
import unicodedata
from collections import defaultdict
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

APPEND_ONLY = {"annotations": "annotations", "person_corrections": "person_corrections"}


def _key(name: str) -> str:
    return "".join(unicodedata.normalize("NFKC", name).split()).casefold()


def _set_append_only(enabled: bool) -> None:
    """Lifts (``False``) or puts back (``True``) the BEFORE UPDATE triggers of revisions 0001 and 0004."""
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        trigger = f"trg_{table}_append_only"
        if dialect == "postgresql":
            op.execute(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {trigger}")
        elif dialect == "sqlite":
            if enabled:
                op.execute(
                    f"CREATE TRIGGER {trigger} BEFORE UPDATE ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} are append-only: add a new row instead'); END"
                )
            else:
                op.execute(f"DROP TRIGGER IF EXISTS {trigger}")


def _merge(conn: sa.Connection, keep: int, other: int) -> None:
    conn.execute(
        sa.text(
            "DELETE FROM review_skips WHERE annotator_id = :other AND face_id IN "
            "(SELECT face_id FROM review_skips WHERE annotator_id = :keep)"
        ),
        {"keep": keep, "other": other},
    )
    for table in ("review_skips", "annotations", "person_corrections"):
        conn.execute(
            sa.text(f"UPDATE {table} SET annotator_id = :keep WHERE annotator_id = :other"),
            {"keep": keep, "other": other},
        )
    conn.execute(sa.text("DELETE FROM annotators WHERE id = :other"), {"other": other})


def upgrade() -> None:
    """Adds ``annotators.key``, merges colliding annotators, makes the key unique."""
    with op.batch_alter_table('annotators', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key', sa.String(length=200), server_default='', nullable=False))
    conn = op.get_bind()
    groups: dict[str, list[int]] = defaultdict(list)
    for ident, name in conn.execute(sa.text("SELECT id, name FROM annotators ORDER BY id")):
        groups[_key(name)].append(ident)
    merges = [(ids[0], other) for ids in groups.values() for other in ids[1:]]
    if merges:
        _set_append_only(False)
        for keep, other in merges:
            _merge(conn, keep, other)
        _set_append_only(True)
    for key, ids in groups.items():
        conn.execute(sa.text("UPDATE annotators SET key = :key WHERE id = :id"), {"key": key, "id": ids[0]})
    if conn.dialect.name == "postgresql":
        op.alter_column('annotators', 'key', server_default=None)
    with op.batch_alter_table('annotators', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_annotators_key'), ['key'], unique=True)


def downgrade() -> None:
    """Drops the identity (merged annotators stay merged)."""
    with op.batch_alter_table('annotators', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotators_key'))
    # not through batch mode: on SQLite that would rebuild the table that votes and skips reference
    op.execute("ALTER TABLE annotators DROP COLUMN key")
