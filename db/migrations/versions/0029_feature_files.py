"""Features of finished videos in one file per recording (``media.features_file``, :mod:`db.feature_store`).

Also ``pending_features``: a video's features while it is analysed (apart from ``faces``, so that moving them
frees whole pages). The data step moves the features of every completely analysed video into its file beside the
media files when the store's media root is known (``LabelStore.upgrade``, ``python -m db upgrade``); without one
the rows keep them. The space the rows shrink by comes back with ``python -m db vacuum``. Downgrading reads the pending features and the files back into the rows and removes the files.

Revision ID: 0029
Revises: 0027
Create Date: 2026-12-07 18:30:00

"""
from typing import Sequence, Union

from alembic import context, op
import sqlalchemy as sa
from sqlalchemy.orm import Session


# revision identifiers, used by Alembic.
revision: str = '0029'
down_revision: Union[str, Sequence[str], None] = '0027'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _finished_videos(bind: sa.Connection) -> list[int]:
    stmt = sa.text("SELECT id FROM media WHERE kind = 'video' AND analysis_status = 'complete' ORDER BY id")
    return [int(i) for i in bind.execute(stmt).scalars()]


def upgrade() -> None:
    """Upgrade schema."""
    # a plain ADD COLUMN (SQLite supports it): a batch copy of ``media`` would cascade-delete what refers to it
    op.add_column('media', sa.Column('features_file', sa.String(length=200), nullable=True))
    op.create_table(
        'pending_features',
        sa.Column('face_id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('features', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_pending_features_face_id_faces'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_pending_features_media_id_media'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('face_id', name=op.f('pk_pending_features')),
    )
    op.create_index('ix_pending_features_media_id_face_id', 'pending_features', ['media_id', 'face_id'])
    root = context.config.attributes.get("media_root")
    if root is None:
        return
    from db import feature_store

    session = Session(bind=op.get_bind())
    feature_store.bind(session, root)
    for media_id in _finished_videos(op.get_bind()):
        feature_store.move_video(session, media_id)
    session.flush()


def downgrade() -> None:
    """Downgrade schema."""
    bind = op.get_bind()
    root = context.config.attributes.get("media_root")
    rows = bind.execute(
        sa.text(
            "SELECT id FROM media WHERE features_file IS NOT NULL "
            "OR id IN (SELECT DISTINCT media_id FROM pending_features)"
        )
    ).scalars().all()
    if rows:
        from db import feature_store

        session = Session(bind=bind)
        feature_store.bind(session, root)
        for media_id in rows:
            feature_store.move_back(session, int(media_id))
        session.flush()
    op.drop_index('ix_pending_features_media_id_face_id', table_name='pending_features')
    op.drop_table('pending_features')
    op.drop_column('media', 'features_file')  # plain DROP COLUMN (SQLite >= 3.35): no cascading copy
