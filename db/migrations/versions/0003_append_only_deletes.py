"""Annotations and predictions refuse a direct DELETE too; deleting their media item or track still removes them.

Migration 0001 made both tables refuse UPDATE. A direct ``DELETE FROM annotations`` (or predictions) is now refused
as well, by a BEFORE DELETE trigger that lets a row go only when the face or track it belongs to is already gone,
which is exactly the case of the ``ON DELETE CASCADE`` of a privacy deletion (``Upkeep.delete_media`` /
``delete_track``): both databases run the cascade after the parent row is deleted, so the parent no longer exists
when the child's trigger fires. An annotation that reverts another one goes with it (``reverts_id`` cascades) since
both belong to the same, already deleted, face or track.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10 09:00:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

MESSAGE = (
    "are append-only: a row is deleted only with its media item or track "
    "(python -m db delete-media / delete-track); to correct it, add a new row"
)
PARENT_EXISTS = {
    "annotations": (
        "(OLD.face_id IS NOT NULL AND EXISTS (SELECT 1 FROM faces WHERE faces.id = OLD.face_id)) "
        "OR (OLD.track_id IS NOT NULL AND EXISTS (SELECT 1 FROM tracks WHERE tracks.id = OLD.track_id))"
    ),
    "predictions": "EXISTS (SELECT 1 FROM faces WHERE faces.id = OLD.face_id)",
}


def upgrade() -> None:
    """Adds the BEFORE DELETE triggers."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table, parent_exists in PARENT_EXISTS.items():
            op.execute(
                f"CREATE TRIGGER trg_{table}_no_delete BEFORE DELETE ON {table} WHEN {parent_exists} "
                f"BEGIN SELECT RAISE(ABORT, '{table} {MESSAGE}'); END"
            )
    elif dialect == "postgresql":
        for table, parent_exists in PARENT_EXISTS.items():
            op.execute(
                f"CREATE FUNCTION affectlab_{table}_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF {parent_exists} THEN RAISE EXCEPTION '{table} {MESSAGE}'; END IF; RETURN OLD; END; $$"
            )
            op.execute(
                f"CREATE TRIGGER trg_{table}_no_delete BEFORE DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION affectlab_{table}_no_delete()"
            )


def downgrade() -> None:
    """Drops the BEFORE DELETE triggers."""
    dialect = op.get_bind().dialect.name
    for table in PARENT_EXISTS:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_no_delete")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_no_delete ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS affectlab_{table}_no_delete()")
