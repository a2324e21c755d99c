"""IAM conformance: record the Google Cloud API calls each identity's code makes, check them against the grants.

No emulator enforces IAM, so the calls are recorded while the code runs against the emulators and compared
with what the Pulumi program grants (`edgefleet.infra.stack_resources.iam_bindings` of the stack's resources):

- `CallRecorder` records at the client transports: a gRPC client interceptor on every channel the Pub/Sub
  clients open (they open them with `grpc.insecure_channel` when `PUBSUB_EMULATOR_HOST` is set), and a
  wrapper of `requests.Session.request` for Cloud Storage's JSON API (mapped to the API's method names).
  Cloud Monitoring has no emulator: its calls are recorded by `record_call` at the boundary of the test fake
  that stands in for `MetricServiceClient`, and marked `via="fake client boundary"`.
- A table row with `denial_tolerated` (a client library's best-effort call, such as google-cloud-storage's
  background bucket metadata read) is recorded but needs no grant.
- `check_conformance` then requires, for every recorded (identity, method, resource), a role granted to that
  identity on that resource (or on the project) that holds each permission `tests.infra.support.iam_table` lists
  for the method, and reports every granted role that no recorded call needed. A grant with an IAM condition on
  the object name prefix (`names.object_prefix_condition`) applies only to the calls it allows: an object
  whose name starts with the prefix, or a listing whose `prefix` does (Cloud Storage checks a listing against
  the bucket, so a listing without that prefix is denied); any other condition applies to nothing here.

No Pulumi import.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from edgefleet.infra.policy import Violation
from edgefleet.infra.stack_resources import Binding
from tests.infra.support.iam_table import ROLE_PERMISSIONS, UnknownMethodError, permissions_for, roles_granting

VIA_GRPC = "grpc interceptor"
VIA_HTTP = "http transport"
VIA_FAKE = "fake client boundary (no emulator)"

# IAM resource kind of each Pulumi IAM member type (Binding.scope) -> the kind of resource it grants on.
SCOPE_KIND = {
    "pubsub/topicIAMMember": "topic",
    "pubsub/subscriptionIAMMember": "subscription",
    "pubsub/schemaIAMMember": "schema",
    "storage/bucketIAMMember": "bucket",
    "projects/iAMMember": "project",
    "kms/cryptoKeyIAMMember": "crypto_key",
}
_PUBSUB_NAME = re.compile(r"^projects/([^/]+)(?:/(topics|subscriptions|schemas)/([^/]+))?$")
_PUBSUB_KIND = {"topics": "topic", "subscriptions": "subscription", "schemas": "schema"}
_REQUEST_NAME_FIELDS = ("subscription", "topic", "name", "parent")
_STORAGE_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"^/upload/storage/v1/b/([^/]+)/o$"), "storage.objects.insert"),
    ("PUT", re.compile(r"^/upload/storage/v1/b/([^/]+)/o$"), "storage.objects.insert"),
    ("GET", re.compile(r"^/(?:download/)?storage/v1/b/([^/]+)/o/.+$"), "storage.objects.get"),
    ("DELETE", re.compile(r"^/storage/v1/b/([^/]+)/o/.+$"), "storage.objects.delete"),
    ("PATCH", re.compile(r"^/storage/v1/b/([^/]+)/o/.+$"), "storage.objects.patch"),
    ("GET", re.compile(r"^/storage/v1/b/([^/]+)/o$"), "storage.objects.list"),
    ("GET", re.compile(r"^/storage/v1/b/([^/]+)$"), "storage.buckets.get"),
)


class ApiCall(NamedTuple):
    """One recorded call: who, which method, on what (full resource name or bucket), how it was seen, and for a
    Cloud Storage call the object's name (a listing: its `prefix` parameter; "" when it has none)."""

    identity: str
    method: str
    resource: str
    via: str
    object_name: str = ""


class ResourceRef(NamedTuple):
    kind: str
    name: str  # short name (topic id, bucket name, project id)


def resource_ref(resource: str, kind_hint: str | None = None) -> ResourceRef:
    """`projects/p/topics/t` -> (topic, t); `projects/p` -> (project, p); a bucket name -> (bucket, name)."""
    match = _PUBSUB_NAME.match(resource)
    if match:
        project, collection, name = match.groups()
        return ResourceRef(_PUBSUB_KIND[collection], name) if collection else ResourceRef("project", project)
    return ResourceRef(kind_hint or "bucket", resource)


def storage_method(http_method: str, url: str, body: Any = None) -> tuple[str, str, str] | None:
    """The JSON API method, bucket and object name (a listing: its prefix) of a Cloud Storage request, or None
    when `url` is not one. An upload's name is in its query, or in the object metadata its body opens with (a
    multipart or a resumable upload's first request).

    An upload that does not say `ifGenerationMatch=0` may replace a live object, which needs
    `storage.objects.delete` as well: it is recorded as `storage.objects.insert[overwrite]`.
    """
    parts = urlsplit(url)
    path = unquote(parts.path)
    for verb, pattern, method in _STORAGE_ROUTES:
        match = pattern.match(path)
        if match and verb == http_method.upper():
            query = parse_qs(parts.query)
            if method == "storage.objects.insert" and query.get("ifGenerationMatch") != ["0"]:
                method += "[overwrite]"
            return method, match.group(1), _object_of(method, path, query) or _upload_name(method, body)
    if "/storage/v1/" in path:
        return f"storage JSON API {http_method.upper()} {path}", path, ""  # unknown: fails the check, named
    return None


def _object_of(method: str, path: str, query: Mapping[str, list[str]]) -> str:
    """The object a Storage call acts on: `/o/<name>` in the path, an upload's `name`, a listing's `prefix`."""
    if method == "storage.objects.list":
        return (query.get("prefix") or [""])[0]
    if "/o/" in path:
        return path.split("/o/", 1)[1]
    return (query.get("name") or [""])[0]


_METADATA_NAME = re.compile(rb'^\{[^\r\n]*?"name": ?"((?:[^"\\]|\\.)*)"', re.MULTILINE)


def _upload_name(method: str, body: Any) -> str:
    """The object name in an upload's JSON metadata (multipart: its first part; resumable: the whole body)."""
    if not method.startswith("storage.objects.insert") or not isinstance(body, (bytes, str)):
        return ""
    found = _METADATA_NAME.search(body.encode() if isinstance(body, str) else body)
    return json.loads(b'"' + found.group(1) + b'"') if found else ""


class CallRecorder:
    """Records the calls made while `as_identity(name)` is active (from any thread).

    Attributes:
        calls: Everything recorded, in order.
    """

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self._identity: str | None = None
        self._lock = threading.Lock()

    @contextmanager
    def as_identity(self, identity: str) -> Iterator[CallRecorder]:
        """Calls made inside are attributed to `identity` (the code runs as that service account)."""
        self._identity = identity
        try:
            yield self
        finally:
            self._identity = None

    def record_call(self, method: str, resource: str, via: str, object_name: str = "") -> None:
        identity = self._identity
        if identity is None:
            return  # setup or teardown of the test, not the identity's code
        with self._lock:
            self.calls.append(ApiCall(identity, method, resource, via, object_name))

    # --- gRPC ----------------------------------------------------------------------------------------

    def interceptor(self) -> Any:
        """A gRPC client interceptor recording every call made through the channel it wraps."""
        import grpc

        recorder = self

        def method_of(details: Any) -> str:
            method = details.method
            return (method.decode() if isinstance(method, bytes) else method).lstrip("/")

        def name_of(request: Any) -> str:
            for field in _REQUEST_NAME_FIELDS:
                value = getattr(request, field, None)
                if isinstance(value, str) and value:
                    return value
            return ""

        class _Interceptor(
            grpc.UnaryUnaryClientInterceptor,
            grpc.UnaryStreamClientInterceptor,
            grpc.StreamUnaryClientInterceptor,
            grpc.StreamStreamClientInterceptor,
        ):
            def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
                recorder.record_call(method_of(details), name_of(request), VIA_GRPC)
                return continuation(details, request)

            def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
                recorder.record_call(method_of(details), name_of(request), VIA_GRPC)
                return continuation(details, request)

            def intercept_stream_unary(self, continuation: Callable, details: Any, requests: Any) -> Any:
                return continuation(details, self._recorded(details, requests))

            def intercept_stream_stream(self, continuation: Callable, details: Any, requests: Any) -> Any:
                return continuation(details, self._recorded(details, requests))

            @staticmethod
            def _recorded(details: Any, requests: Iterable[Any]) -> Iterator[Any]:
                # A stream names its resource in its first request (StreamingPull: `subscription`).
                first = True
                for request in requests:
                    if first:
                        recorder.record_call(method_of(details), name_of(request), VIA_GRPC)
                        first = False
                    yield request

        return _Interceptor()

    def wrap_grpc_channel_factory(self, factory: Callable[..., Any]) -> Callable[..., Any]:
        """`grpc.insecure_channel` (or another channel factory) whose channels record their calls."""
        import grpc

        interceptor = self.interceptor()

        def make(*args: Any, **kwargs: Any) -> Any:
            return grpc.intercept_channel(factory(*args, **kwargs), interceptor)

        return make

    # --- HTTP (Cloud Storage JSON API) ---------------------------------------------------------------

    def wrap_http_request(self, request: Callable[..., Any], endpoint: str) -> Callable[..., Any]:
        """`requests.Session.request` that records the Cloud Storage calls sent to `endpoint`."""
        recorder = self

        def wrapped(session: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if url.startswith(endpoint):
                params = kwargs.get("params")
                full_url = url
                if params:
                    from urllib.parse import urlencode

                    full_url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
                found = storage_method(method, full_url, kwargs.get("data"))
                if found is not None:
                    recorder.record_call(found[0], found[1], VIA_HTTP, found[2])
            return request(session, method, url, *args, **kwargs)

        return wrapped


def check_conformance(
    calls: Sequence[ApiCall], bindings: Sequence[Binding], members: Mapping[str, str]
) -> list[Violation]:
    """Every recorded call is allowed by a grant to its identity, and every grant to an identity is used.

    Args:
        calls: The recorded calls.
        bindings: Every grant of the program (`iam_bindings(resources)`).
        members: Identity name (`device`) -> its IAM member (`serviceAccount:...`).

    Returns:
        The violations: a method missing from the table, a permission no grant holds, a role no call used, a
        granted role missing from the role table.
    """
    violations: list[Violation] = []
    used: set[tuple[int, str]] = set()
    for identity, member in sorted(members.items()):
        grants = [binding for binding in bindings if binding.member == member]
        for index, binding in enumerate(bindings):
            if binding.member == member and binding.role not in ROLE_PERMISSIONS:
                violations.append(Violation("iam-conformance", binding.resource.name,
                                            f"{identity} is granted {binding.role}, which ROLE_PERMISSIONS "
                                            "(tests/infra/support/iam_table.py) does not list: add its permissions "
                                            "and source"))
                used.add((index, identity))
        for method, resource, object_name in sorted(
                {(c.method, c.resource, c.object_name) for c in calls if c.identity == identity}):
            try:
                row = permissions_for(method)
            except UnknownMethodError as error:
                violations.append(Violation("iam-conformance", f"{identity}: {method}", str(error)))
                continue
            target = resource_ref(resource, row.resource)
            for permission in row.permissions:
                holders = [
                    binding for binding in grants
                    if _applies(binding, target) and permission in _permissions(binding.role)
                    and condition_allows(binding, method, object_name)
                ]
                if not holders and row.denial_tolerated:
                    continue  # a library's best-effort call: denied on GCP, and the caller carries on
                if not holders:
                    roles = ", ".join(roles_granting(permission)) or "a role with it"
                    on_object = _object_note(method, object_name)
                    violations.append(Violation(
                        "iam-conformance", f"{identity}: {method}",
                        f"{identity} calls {method} on {target.kind} {target.name}{on_object}, which needs "
                        f"{permission} ({row.source}); no role granted to {identity} there includes it: grant "
                        f"{roles} on that {target.kind} in infra/src/edgefleet/infra/identity.py"))
                for binding in holders:
                    used.add((bindings.index(binding), identity))
        for binding in grants:
            if (bindings.index(binding), identity) not in used:
                violations.append(Violation(
                    "iam-conformance", binding.resource.name,
                    f"{binding.role} granted to {identity} on {SCOPE_KIND.get(binding.scope, binding.scope)} "
                    f"{binding.target} is used by no recorded call: remove the grant, or record the code "
                    "that needs it"))
    return violations


_OBJECT_PREFIX = re.compile(r'^resource\.name\.startsWith\("projects/_/buckets/([^/"]+)/objects/([^"]*)"\) \|\| '
                            r'api\.getAttribute\("storage\.googleapis\.com/objectListPrefix", ""\)'
                            r'\.startsWith\("([^"]*)"\)$')


def condition_allows(binding: Binding, method: str, object_name: str) -> bool:
    """Whether the binding's IAM condition (none: always) allows a Storage call on `object_name`.

    Only the object-prefix condition the program writes is understood; any other condition allows nothing here
    (a grant this check cannot read is not counted on).
    """
    condition = binding.resource.inputs.get("condition")
    if not condition:
        return True
    match = _OBJECT_PREFIX.match(str(condition.get("expression", "")))
    if match is None or match.group(2) != match.group(3) or binding.target != match.group(1):
        return False
    prefix = match.group(2)
    # A listing is checked against the bucket (resource.name is the bucket's), so only its prefix can match; a
    # bucket call (storage.buckets.get) matches neither half.
    return bool(object_name) and object_name.startswith(prefix) and method.startswith("storage.objects.")


def _object_note(method: str, object_name: str) -> str:
    if method == "storage.objects.list":
        return f" (prefix {object_name!r})"
    return f" (object {object_name!r})" if object_name else ""


def _permissions(role: str) -> frozenset[str]:
    row = ROLE_PERMISSIONS.get(role)
    return row.permissions if row else frozenset()


def _applies(binding: Binding, target: ResourceRef) -> bool:
    """A grant on the resource itself, or on the project (IAM policies are inherited downwards)."""
    kind = SCOPE_KIND.get(binding.scope)
    return kind == "project" or (kind == target.kind and binding.target == target.name)
