"""media_detection: the face detection settings (preset, minimum face size) each recording was analysed with.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 15:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0026'
down_revision: Union[str, Sequence[str], None] = '0025'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema (recordings analysed before it have no row: their settings were the defaults, unrecorded)."""
    op.create_table(
        'media_detection',
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('preset', sa.String(length=16), nullable=False),
        sa.Column('requested', sa.String(length=16), nullable=False),
        sa.Column('min_face_size', sa.Integer(), nullable=False),
        sa.Column('detect_max_side', sa.Integer(), nullable=True),
        sa.Column('probe_faces', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_media_detection_media_id_media'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('media_id', name=op.f('pk_media_detection')),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('media_detection')
