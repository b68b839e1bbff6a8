"""Resumable analysis of long videos: a media item's analysis status and how far a partial analysis got.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.add_column(sa.Column('analysis_status', sa.String(length=10), server_default='complete',
                                      nullable=False))
        batch_op.add_column(sa.Column('analysed_until_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('analysed_until_frame', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('analysed_samples', sa.Integer(), nullable=True))
        batch_op.create_check_constraint(op.f('ck_media_analysis_status'),
                                         "analysis_status IN ('complete', 'partial')")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_media_analysis_status'), type_='check')
        batch_op.drop_column('analysed_samples')
        batch_op.drop_column('analysed_until_frame')
        batch_op.drop_column('analysed_until_s')
        batch_op.drop_column('analysis_status')
