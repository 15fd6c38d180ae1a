"""The former place of ``chatkit_stores.blobs`` (the seam is shared with ``MemoryStore``)."""

from ..blobs import ATTACHMENTS, ITEMS, PLAIN, THREADS, Blobs, Encrypted

__all__ = ["ATTACHMENTS", "ITEMS", "PLAIN", "THREADS", "Blobs", "Encrypted"]
