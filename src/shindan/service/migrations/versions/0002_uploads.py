"""uploads, upload files, case files

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('open', 'stored', 'refused')", name=op.f("ck_uploads_state")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_uploads_site_id_sites")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_uploads_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
        sa.UniqueConstraint("public_id", name=op.f("uq_uploads_public_id")),
    )
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_uploads_manifest_sha256"), ["manifest_sha256"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_uploads_site_id"), ["site_id"], unique=False)

    op.create_table(
        "case_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("modality", sa.String(length=32), nullable=True),
        sa.Column("upload_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_files_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.id"], name=op.f("fk_case_files_upload_id_uploads")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_files")),
        sa.UniqueConstraint("case_id", "sha256", name="uq_case_files_case_sha256"),
    )
    with op.batch_alter_table("case_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_files_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_case_files_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_case_files_upload_id"), ["upload_id"], unique=False)

    op.create_table(
        "upload_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("cases", sa.String(length=1024), nullable=False),
        sa.Column("modality", sa.String(length=32), nullable=True),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("duplicate", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["uploads.id"],
            name=op.f("fk_upload_files_upload_id_uploads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_files")),
        sa.UniqueConstraint("upload_id", "index", name="uq_upload_files_upload_index"),
    )
    with op.batch_alter_table("upload_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upload_files_upload_id"), ["upload_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upload_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upload_files_upload_id"))

    op.drop_table("upload_files")
    with op.batch_alter_table("case_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_files_upload_id"))
        batch_op.drop_index(batch_op.f("ix_case_files_sha256"))
        batch_op.drop_index(batch_op.f("ix_case_files_case_id"))

    op.drop_table("case_files")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_uploads_site_id"))
        batch_op.drop_index(batch_op.f("ix_uploads_manifest_sha256"))

    op.drop_table("uploads")
