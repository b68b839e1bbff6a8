"""Recording metadata for the study tables: course, recording name and date of each media item (all optional).

Revision ID: 0022
Revises: 0019
Create Date: 2026-12-07 15:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0022'
down_revision: Union[str, Sequence[str], None] = '0019'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.add_column(sa.Column('course', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('recording_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('recorded_on', sa.Date(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    # Plain DROP COLUMN (SQLite >= 3.35, PostgreSQL): a batch "move and copy" of ``media`` would drop the old table
    # with foreign keys on, and its ON DELETE CASCADE would take every face with it.
    op.drop_column('media', 'recorded_on')
    op.drop_column('media', 'recording_name')
    op.drop_column('media', 'course')
