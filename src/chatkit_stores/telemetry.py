"""Optional OpenTelemetry spans and a duration histogram for every store call. Never content.

Off, at the cost of one attribute check per call, unless ``opentelemetry-api`` is installed
and either a tracer or meter provider is configured: passed to :class:`Telemetry` (``store.telemetry
= Telemetry(tracer_provider=..., meter_provider=...)``), or set globally (``set_tracer_provider``,
``set_meter_provider``, ``opentelemetry-instrument``). A provider whose class belongs to the API
package (the proxy or no-op defaults) counts as not configured.

The decision is made once, at a store's first call, and cached: providers configured later
are picked up by :func:`refresh` (or ``telemetry.refresh()``), never by a clock. Once on it
stays on (OpenTelemetry sets a global provider only once per process).

Store methods are wrapped by :func:`operation`, which also audits the ones given an ``audit``
action: one wrapper per call, the tenant resolved once for both.

Spans (metadata stores): named ``"{db.operation.name} {db.collection.name}"``, kind CLIENT,
with ``db.system.name``, ``db.operation.name`` (the method), ``db.collection.name`` (the table),
``db.namespace``, ``server.address`` and ``server.port`` where known, and
``chatkit_stores.tenant.hash``: the first 16 hex digits of SHA-256 of the tenant (HMAC-SHA256
with ``tenant_salt`` when given; pass ``record_tenant=False`` to leave it out). Attachment stores
use ``chatkit_stores.attachments.*`` names (see ``docs/observability.md``). Failures set the
status to ERROR and ``error.type`` to the exception's class; exception messages are not recorded
(a database error can quote the statement's parameters, i.e. content).

The histograms ``db.client.operation.duration`` and ``chatkit_stores.attachments.operation.
duration`` (seconds) carry the span's attributes except the tenant (unbounded cardinality).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from .audit import audit_call

INSTRUMENTATION_NAME = "chatkit_stores"

DB_SYSTEM_NAME: Final = "db.system.name"
DB_OPERATION_NAME: Final = "db.operation.name"
DB_COLLECTION_NAME: Final = "db.collection.name"
DB_NAMESPACE: Final = "db.namespace"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
TENANT_HASH: Final = "chatkit_stores.tenant.hash"
ATTACHMENTS_BACKEND: Final = "chatkit_stores.attachments.backend"
ATTACHMENTS_OPERATION: Final = "chatkit_stores.attachments.operation"
DB_DURATION: Final = "db.client.operation.duration"
ATTACHMENTS_DURATION: Final = "chatkit_stores.attachments.operation.duration"

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""The bucket boundaries the database semantic conventions advise for operation durations."""

Attributes = dict[str, str | int]


@dataclass(frozen=True)
class Profile:
    """How one kind of store names its spans, attributes and histogram."""

    operation_key: str
    collection_key: str | None
    metric: str
    metric_description: str

    def span_name(self, operation: str, collection: str | None) -> str:
        """``"{operation} {collection}"`` (semantic conventions), or ``attachments.{operation}``."""
        if self.collection_key is None:
            return f"attachments.{operation}"
        return f"{operation} {collection}" if collection else operation


STORE_PROFILE = Profile(
    DB_OPERATION_NAME, DB_COLLECTION_NAME, DB_DURATION, "Duration of store operations"
)
ATTACHMENTS_PROFILE = Profile(
    ATTACHMENTS_OPERATION, None, ATTACHMENTS_DURATION, "Duration of attachment store operations"
)


class Telemetry:
    """Where spans and durations go: the given providers, else the global ones once configured.

    ``Telemetry()`` follows the global providers; a store whose ``telemetry`` is ``None`` uses a
    shared ``Telemetry()``. Passing a provider uses it (and the global one of the other kind).
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        tenant_salt: str | bytes | None = None,
        record_tenant: bool = True,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.record_tenant = record_tenant
        self._salt = tenant_salt.encode() if isinstance(tenant_salt, str) else tenant_salt
        self.active = False
        """Whether calls are traced or measured (read on every call: keep it a plain bool)."""
        self.decided = False
        """Whether ``active`` was decided (on the first call, or by ``refresh``)."""
        self.tracer: Any = None
        self._meter: Any = None
        self._histograms: dict[str, Any] = {}
        self._client_kind: Any = None
        self._status_error: Any = None

    def refresh(self) -> None:
        """Decide now whether spans or durations are recorded (see the module docstring)."""
        try:
            trace = importlib.import_module("opentelemetry.trace")
            metrics = importlib.import_module("opentelemetry.metrics")
        except ImportError:
            self.active, self.decided = False, True
            return
        tracer_provider = self.tracer_provider or trace.get_tracer_provider()
        meter_provider = self.meter_provider or metrics.get_meter_provider()
        from . import __version__

        if self.tracer is None and _configured(tracer_provider):
            self.tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__)
            self._client_kind = trace.SpanKind.CLIENT
            self._status_error = trace.Status(trace.StatusCode.ERROR)
        if self._meter is None and _configured(meter_provider):
            self._meter = meter_provider.get_meter(INSTRUMENTATION_NAME, __version__)
        self.active = self.tracer is not None or self._meter is not None
        self.decided = True

    def on(self) -> bool:
        """Whether calls are recorded, deciding it first if no call has yet."""
        if not self.decided:
            self.refresh()
        return self.active

    def tenant_hash(self, tenant: str) -> str:
        """16 hex digits of SHA-256 (HMAC-SHA256 with ``tenant_salt``) of the tenant."""
        if self._salt is None:
            return hashlib.sha256(tenant.encode()).hexdigest()[:16]
        return hmac.new(self._salt, tenant.encode(), hashlib.sha256).hexdigest()[:16]

    def histogram(self, profile: Profile) -> Any:
        """The profile's duration histogram, or None without a meter provider."""
        if self._meter is None:
            return None
        histogram = self._histograms.get(profile.metric)
        if histogram is None:
            histogram = self._meter.create_histogram(
                profile.metric,
                unit="s",
                description=profile.metric_description,
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            )
            self._histograms[profile.metric] = histogram
        return histogram

    def start(self, store: Any, call: Call, tenant: str | None) -> Measure:
        """Start measuring one call of ``tenant``: its span (if there is a tracer) and clock."""
        profile: Profile = store.telemetry_profile
        collection = store.collection_name(call.collection) if call.collection else None
        attributes: Attributes = {profile.operation_key: call.operation}
        if collection is not None and profile.collection_key is not None:
            attributes[profile.collection_key] = collection
        span_attributes = dict(attributes)
        if self.record_tenant and tenant is not None:
            span_attributes[TENANT_HASH] = self.tenant_hash(tenant)
        span = None
        if self.tracer is not None:
            span = self.tracer.start_span(
                profile.span_name(call.operation, collection),
                kind=self._client_kind,
                attributes=span_attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
        return Measure(self, store, profile, span, attributes)


@dataclass
class Measure:
    """One call being measured: its span (if traced) and its start time."""

    telemetry: Telemetry
    store: Any
    profile: Profile
    span: Any
    attributes: Attributes
    started: float = field(default_factory=time.perf_counter)

    def current(self) -> Any:
        """A context manager making the span current (nothing without a span)."""
        if self.span is None:
            return nullcontext()
        trace = importlib.import_module("opentelemetry.trace")
        return trace.use_span(
            self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def end(self, error: BaseException | None) -> None:
        """Record the duration, mark a failure (its class, never its message), end the span."""
        elapsed = time.perf_counter() - self.started
        # Asked at the end: a MariaDB server is told from MySQL once the engine has connected.
        system = self.store.telemetry_attributes()
        attributes = {**self.attributes, **system}
        if self.span is not None:
            self.span.set_attributes(system)
        if error is not None:
            error_type = _qualified_name(error)
            attributes = {**attributes, ERROR_TYPE: error_type}
            if self.span is not None:
                self.span.set_attribute(ERROR_TYPE, error_type)
                self.span.set_status(self.telemetry._status_error)
                self.span.add_event("exception", {"exception.type": error_type})
        histogram = self.telemetry.histogram(self.profile)
        if histogram is not None:
            histogram.record(elapsed, attributes)
        if self.span is not None:
            self.span.end()


DEFAULT = Telemetry()
"""What a store built with ``telemetry=None`` uses: the global providers, once configured."""


def refresh() -> None:
    """Check the global providers again now (e.g. right after configuring OpenTelemetry)."""
    DEFAULT.refresh()


@dataclass(frozen=True)
class Call:
    """One wrapped method: its operation, collection, audit action, where its tenant is found."""

    operation: str
    collection: str | None
    context_at: int | None
    tenant_at: int | None
    audit: str | None = None
    id_name: str | None = None

    def tenant(self, store: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The call's tenant (from ``context`` or a ``tenant`` argument), or None."""
        if self.tenant_at is not None:
            value = args[self.tenant_at] if len(args) > self.tenant_at else kwargs.get("tenant")
            return value if isinstance(value, str) else None
        if self.context_at is None:
            return None
        context = args[self.context_at] if len(args) > self.context_at else kwargs.get("context")
        try:
            return str(store.tenant_of(context))
        except Exception:
            return None


def _describe(
    method: Callable[..., Any], operation: str | None, collection: str | None, audit: str | None
) -> Call:
    names = list(inspect.signature(method).parameters)[1:]
    return Call(
        operation or method.__name__,
        collection,
        names.index("context") if "context" in names else None,
        names.index("tenant") if "tenant" in names else None,
        audit,
        names[0] if audit is not None else None,
    )


R = TypeVar("R")
Method = Callable[..., Coroutine[Any, Any, R]]
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])
S = TypeVar("S", bound=Callable[..., AsyncIterator[bytes]])


def operation(
    collection: str | None = None, *, audit: str | None = None, name: str | None = None
) -> Callable[[F], F]:
    """Trace, time and (with ``audit``) audit an async store method, resolving its tenant once.

    ``@operation("threads", audit=THREAD_DELETE)`` on ``delete_thread``: ``collection`` is
    ``threads``, ``items`` or ``attachments`` (the store turns it into its table name), the
    operation is the method's name (or ``name``), ``audit`` the action of the event emitted when
    the method returns or raises (see ``chatkit_stores.audit.audit_call``). A method that is not
    audited, while telemetry is off, returns its own coroutine: no extra frame, no allocation.
    """

    def decorate(method: F) -> F:
        call = _describe(method, name, collection, audit)

        @functools.wraps(method)
        def shell(store: Any, *args: Any, **kwargs: Any) -> Any:
            telemetry = store.telemetry
            off = not telemetry.active and (telemetry.decided or not telemetry.on())
            if off and call.audit is None:
                return method(store, *args, **kwargs)  # the method's own coroutine
            return _run(call, method, store, args, kwargs)

        _mark_coroutine_function(method, shell)
        return cast(F, shell)

    return decorate


async def _run(
    call: Call, method: Method[R], store: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> R:
    telemetry: Telemetry = store.telemetry
    measured = telemetry.on()
    wanted = call.audit is not None or (measured and telemetry.record_tenant)
    tenant = call.tenant(store, args, kwargs) if wanted else None
    measure = telemetry.start(store, call, tenant) if measured else None
    try:
        with nullcontext() if measure is None else measure.current():
            work = method(store, *args, **kwargs)
            if call.audit is None:
                result = await work
            else:
                object_id = args[0] if args else kwargs.get(call.id_name or "")
                result = await audit_call(store, call.audit, tenant, call.id_name, object_id, work)
    except BaseException as error:
        if measure is not None:
            measure.end(error)
        raise
    if measure is not None:
        measure.end(None)
    return result


def traced_stream(operation: str | None = None) -> Callable[[S], S]:
    """Trace a method returning an async iterator; the span lasts until the stream ends."""

    def decorate(method: S) -> S:
        call = _describe(method, operation, None, None)

        @functools.wraps(method)
        def shell(store: Any, *args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
            telemetry: Telemetry = store.telemetry
            if not telemetry.active and (telemetry.decided or not telemetry.on()):
                return method(store, *args, **kwargs)
            tenant = call.tenant(store, args, kwargs) if telemetry.record_tenant else None
            measure = telemetry.start(store, call, tenant)
            return _stream(measure, method(store, *args, **kwargs))

        return cast(S, shell)

    return decorate


async def _stream(measure: Measure, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # The span is not made current: a generator's context would leak into its consumer.
    try:
        async for chunk in chunks:
            yield chunk
    except BaseException as error:
        measure.end(None if isinstance(error, GeneratorExit) else error)
        raise
    measure.end(None)


def _mark_coroutine_function(method: Callable[..., Any], shell: Callable[..., Any]) -> None:
    """Keep ``shell`` a coroutine function to callers (it returns the method's coroutine)."""
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if mark is not None and inspect.iscoroutinefunction(method):
        mark(shell)


def sql_attributes(engine: Any) -> Attributes:
    """``db.system.name``, ``db.namespace`` and ``server.*`` of an SQLAlchemy engine."""
    url = engine.url
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {DB_SYSTEM_NAME: "sqlite"}
    if backend == "mysql":
        system = "mariadb" if getattr(engine.dialect, "is_mariadb", False) else "mysql"
        default_port = 3306
    else:
        system, default_port = "postgresql", 5432
    attributes: Attributes = {DB_SYSTEM_NAME: system}
    if url.database:
        attributes[DB_NAMESPACE] = url.database
    if url.host:
        attributes[SERVER_ADDRESS] = url.host
        attributes[SERVER_PORT] = url.port or default_port
    return attributes


def _configured(provider: Any) -> bool:
    """Whether a provider is a real one (its class is not the API's proxy or no-op)."""
    return provider is not None and not type(provider).__module__.startswith(
        ("opentelemetry.trace", "opentelemetry.metrics")
    )


def _qualified_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


__all__ = ["Telemetry", "operation", "refresh", "sql_attributes", "traced_stream"]
