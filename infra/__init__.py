"""How the real services start: local S3, Prefect server + worker (see each module)."""
