"""Features of finished videos in one file per recording (``media.features_file``, :mod:`db.feature_store`).

Also ``pending_features``: a video's features while it is analysed (apart from ``faces``, so that moving them
frees whole pages). At head, ``env.py`` moves the features of every completely analysed video into its file beside
the media files when the store's media root is known (``LabelStore.upgrade``, ``python -m db upgrade``); without
one the rows keep them. The space the rows shrink by comes back with ``python -m db vacuum``. Downgrading reads the pending features and the files back into the rows and removes the files.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 18:30:00

"""
from typing import Sequence, Union

from collections.abc import Iterator
from pathlib import Path

from alembic import context, op
import numpy as np
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0029'
down_revision: Union[str, Sequence[str], None] = '0028'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema (the finished videos' features move to their files at head: ``env.py``)."""
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


_FACES = sa.table('faces', sa.column('id', sa.Integer), sa.column('features', sa.LargeBinary))
_BATCH = 4096


def _file_rows(path: Path) -> Iterator[list[dict[str, object]]]:
    """The rows of a feature file as this revision wrote them: ``(id int64, f uint8[L])`` in id order, .npy."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    for i in range(0, arr.shape[0], _BATCH):
        chunk = arr[i : i + _BATCH]
        yield [{"fid": int(k), "data": bytes(f.tobytes())} for k, f in zip(chunk["id"], chunk["f"], strict=True)]


def downgrade() -> None:
    """Downgrade schema: pending features and the feature files back into the face rows, the files removed."""
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE faces SET features = (SELECT p.features FROM pending_features p WHERE p.face_id = faces.id) "
            "WHERE id IN (SELECT face_id FROM pending_features)"
        )
    )
    filed = bind.execute(
        sa.text("SELECT id, study_id, sha256 FROM media WHERE features_file IS NOT NULL ORDER BY id")
    ).all()
    root = context.config.attributes.get("media_root")
    if filed and root is None:
        raise RuntimeError(
            f"{len(filed)} videos keep their features in files under the store's media folder: downgrade through "
            "the store (LabelStore.upgrade/downgrade with its media root) so that they move back into the rows"
        )
    stmt = sa.update(_FACES).where(_FACES.c.id == sa.bindparam("fid")).values(features=sa.bindparam("data"))
    done = []
    for _media_id, study_id, sha in filed:
        path = Path(str(root)) / str(study_id) / f"{sha}.features.npy"
        for rows in _file_rows(path):
            bind.execute(stmt, rows)
        done.append(path)
    op.drop_index('ix_pending_features_media_id_face_id', table_name='pending_features')
    op.drop_table('pending_features')
    op.drop_column('media', 'features_file')  # plain DROP COLUMN (SQLite >= 3.35): no cascading copy
    for path in done:  # once the rows hold them (a failed downgrade rolls back and keeps the files)
        path.unlink(missing_ok=True)
