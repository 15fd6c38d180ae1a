"""``tests._types`` for openai-chatkit's own tests: the request context they pass to the store.

The sdist's tests build ``RequestContext(user_id=...)``; our stores' default tenant resolver
reads ``user_id`` from a pydantic model's attribute, so no resolver is configured.
"""

from __future__ import annotations

from pydantic import BaseModel


class RequestContext(BaseModel):
    """The per-request context of the upstream tests: one user, one tenant."""

    user_id: str
