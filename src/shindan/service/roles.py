"""The service's roles, in a module without SQLAlchemy so the CLI's help starts fast."""

ROLES = ("admin", "uploader", "pathologist", "researcher")
