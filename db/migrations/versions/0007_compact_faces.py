"""Compact faces: features stored as uint8 with a per-vector minimum and step; video crops re-cut from the recording.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-07 06:00:00

Adds ``media.recut_crops`` (the crops of this video's faces without a stored one are re-cut from its kept file) and
``studies.keep_video_crops`` (a study that asks to store every video crop), and converts every stored float32
feature vector (``4 * feature_dim`` bytes) to the compact form of :mod:`db.codecs` (``feature_dim + 8`` bytes) in
batches, without re-analysis. The codec is copied here (frozen), so later changes of ``db.codecs`` do not change
what this revision did. Stored crops are left as they are: dropping those a kept recording re-cuts pixel-equal
needs the media folder, which a migration does not know; ``python -m db compact --study S --crops`` does it, face by
face, after checking the equality. Downgrade converts the features back to float32 (the compact values, widened)
and drops the two columns (plain ``DROP COLUMN``, never a table copy: the cascade would delete the faces);
video faces whose crop was dropped stay without one.
"""
from typing import Any, Callable, Sequence, Union

from alembic import op
import numpy as np
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH = 2000

faces = sa.table(
    'faces',
    sa.column('id', sa.Integer),
    sa.column('features', sa.LargeBinary),
    sa.column('feature_dim', sa.Integer),
)


def _to_u8(data: bytes) -> bytes:
    arr = np.frombuffer(data, dtype='<f4')
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return data
    lo = float(arr.min())
    step = (float(arr.max()) - lo) / 255.0
    if step <= 0.0 or not np.isfinite(step):
        step = 1.0
    q = np.clip(np.rint((arr.astype(np.float64) - lo) / step), 0, 255).astype(np.uint8)
    return np.array([lo, step], dtype='<f4').tobytes() + q.tobytes()


def _to_f32(data: bytes) -> bytes:
    lo, step = (float(v) for v in np.frombuffer(data[:8], dtype='<f4'))
    q = np.frombuffer(data[8:], dtype=np.uint8).astype(np.float64)
    out: bytes = (lo + step * q).astype('<f4').tobytes()
    return out


def _convert(from_len: Callable[[Any], Any], fn: Callable[[bytes], bytes]) -> None:
    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(
            sa.select(faces.c.id, faces.c.features)
            .where(
                faces.c.id > after,
                faces.c.features.is_not(None),
                sa.func.length(faces.c.features) == from_len(faces.c.feature_dim),
            )
            .order_by(faces.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            faces.update().where(faces.c.id == sa.bindparam('fid')).values(features=sa.bindparam('data')),
            [{'fid': fid, 'data': fn(bytes(data))} for fid, data in rows],
        )
        after = rows[-1][0]


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recut_crops', sa.Boolean(), server_default='0', nullable=False))
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keep_video_crops', sa.Boolean(), server_default='0', nullable=False))
    _convert(lambda dim: 4 * dim, _to_u8)


def downgrade() -> None:
    """Downgrade schema."""
    _convert(lambda dim: dim + 8, _to_f32)
    # Plain DROP COLUMN (SQLite >= 3.35, PostgreSQL): a batch "move and copy" of ``media`` would drop the old table
    # with foreign keys on, and its ON DELETE CASCADE would take every face with it.
    op.drop_column('studies', 'keep_video_crops')
    op.drop_column('media', 'recut_crops')
