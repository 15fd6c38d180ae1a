"""The exceptions the stores raise on purpose, each with the audit outcome it stands for.

A leaf module (it imports nothing of this package), so that the audit log can classify an error
without knowing which part of the package raised it.
"""

from __future__ import annotations

from typing import ClassVar, Final

OK: Final = "ok"
NOT_FOUND: Final = "not_found"
DENIED: Final = "denied"
REJECTED: Final = "rejected"
ERROR: Final = "error"


class TenantError(Exception):
    """The request context names no usable tenant; nothing was read or written."""

    audit_outcome: ClassVar[str] = DENIED


class SignatureError(Exception):
    """A signed URL is missing, tampered with, expired, or used for another request."""

    audit_outcome: ClassVar[str] = DENIED


class UploadRejected(ValueError):
    """An upload was refused; ``status`` is the HTTP status to answer (409, 413 or 415)."""

    audit_outcome: ClassVar[str] = REJECTED

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
