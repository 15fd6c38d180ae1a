"""Who owns a row: contexts, resolvers, and what happens without a tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatkit.types import ThreadMetadata
from pydantic import BaseModel

from chatkit_stores import SQLStore, TenantError, single_tenant


# --8<-- [start:contexts]
@dataclass
class RequestContext:  # any object or mapping with tenant_id or user_id works as is
    user_id: str
    roles: tuple[str, ...] = ()


class OrgContext(BaseModel):  # a context that names its tenant differently
    org_id: str
    user_id: str


# --8<-- [end:contexts]


async def isolation(url: str) -> None:
    """Two organisations share a database and never see each other's threads."""
    # --8<-- [start:resolver]
    store = SQLStore.from_url(url, tenant=lambda ctx: ctx.org_id)  # the org owns the data
    await store.create_schema()
    acme = OrgContext(org_id="acme", user_id="ann")
    acme_colleague = OrgContext(org_id="acme", user_id="bob")
    globex = OrgContext(org_id="globex", user_id="ann")

    thread = ThreadMetadata(id="thr_1", title="Q3 plan", created_at=datetime.now())
    await store.save_thread(thread, acme)
    assert (await store.load_thread("thr_1", acme_colleague)).title == "Q3 plan"
    assert (await store.load_threads(20, None, "asc", globex)).data == []  # sees nothing
    await store.delete_thread("thr_1", globex)  # no effect on acme's thread
    assert (await store.load_thread("thr_1", acme)).title == "Q3 plan"
    # --8<-- [end:resolver]
    await store.delete_thread("thr_1", acme)
    await store.close()


async def without_tenant(url: str) -> str:
    """A context without a tenant is refused before anything is read or written."""
    # --8<-- [start:missing]
    store = SQLStore.from_url(url)  # the default resolver: tenant_id, else user_id
    await store.create_schema()
    await store.load_threads(20, None, "asc", RequestContext(user_id="ann"))  # fine
    try:
        await store.load_threads(20, None, "asc", {"session": "s1"})  # no tenant in it
    except TenantError as error:
        message = str(error)  # says how to configure the resolver
    # --8<-- [end:missing]
    await store.close()
    return message


def single(url: str) -> SQLStore[Any]:
    """A single-tenant app says so explicitly."""
    # --8<-- [start:single]
    store = SQLStore.from_url(url, tenant=single_tenant())  # every context: tenant "default"
    # --8<-- [end:single]
    return store
