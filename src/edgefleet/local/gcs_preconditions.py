"""Make `gcp-storage-emulator` enforce GCS generation preconditions, as real Cloud Storage does.

IMPORTANT: this reproduces documented Google Cloud Storage behaviour that the emulator lacks. The emulator
accepts `ifGenerationMatch` and friends and silently IGNORES them, so a compare-and-swap written against it
(channel pointers, rollout records, the `manifest.json` commit of a publish) would "pass" while two writers
both win. Real GCS (https://cloud.google.com/storage/docs/request-preconditions) answers:

- `ifGenerationMatch=N`: the request proceeds only if the live object's generation is N; `N = 0` means
  "only if no live object exists". Otherwise HTTP 412 Precondition Failed.
- `ifGenerationNotMatch=N`: only if the live generation is not N.
- `ifMetagenerationMatch` / `ifMetagenerationNotMatch`: the same on the metageneration (an object that does
  not exist fails them).
- For copy, rewrite and compose the plain conditions apply to the destination object and the
  `ifSource...` ones to the source object.
- Reads (metadata GET, media download) of an object that does not exist stay 404; a failed `...NotMatch`
  on a read is HTTP 304 Not Modified, any other failed condition 412.

The 412 body has the shape GCS returns (`error.errors[0].reason = "conditionNotMet"`), which is what
`google-cloud-storage` turns into `google.api_core.exceptions.PreconditionFailed`.

How: the emulator routes every request through the handler functions in
`gcp_storage_emulator.server.HANDLERS`; `enforce_generation_preconditions(server)` wraps them once per
process with a check that is active only for the emulator instances passed to it (others keep the
emulator's own behaviour). The emulator serves one request at a time (a single-threaded `HTTPServer`), so
the check and the write it guards are atomic with respect to other requests, as on GCS.

Not covered: the batch endpoint and the XML API (`x-goog-if-generation-match` headers), which edgefleet does
not use.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

_CONDITIONS = (
    "ifGenerationMatch",
    "ifGenerationNotMatch",
    "ifMetagenerationMatch",
    "ifMetagenerationNotMatch",
)
_SOURCE_CONDITIONS = {f"ifSource{name[2:]}": name for name in _CONDITIONS}
_PRECONDITION_MESSAGE = "At least one of the pre-conditions you specified did not hold."

_install_lock = threading.Lock()
_enforced_storages: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False


class _Target(NamedTuple):
    bucket: str
    name: str | None
    conditions: dict[str, int]
    is_read: bool


def enforce_generation_preconditions(server: Any) -> None:
    """Makes one running emulator answer generation preconditions like GCS (412 / 304, see module doc).

    Idempotent. Call it after the emulator started.

    Args:
        server: a `gcp_storage_emulator.server.Server` (what `create_server` returns) or an object with such
            a server in its `server` attribute (`edgefleet.local.emulators.GcsEmulator`).
    """
    emulator_server = getattr(server, "server", None) or server
    storage = getattr(emulator_server, "_storage", None)
    if storage is None:
        raise TypeError(f"{server!r} is not a gcp-storage-emulator server (no storage to guard)")
    _install_wrappers()
    _enforced_storages.add(storage)


def is_enforced(server: Any) -> bool:
    """True when `enforce_generation_preconditions` was applied to this emulator."""
    emulator_server = getattr(server, "server", None) or server
    storage = getattr(emulator_server, "_storage", None)
    return storage is not None and storage in _enforced_storages


def _install_wrappers() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        from gcp_storage_emulator import server as emulator_server
        from gcp_storage_emulator.handlers import objects

        targets: dict[Callable[..., Any], Callable[[Any, Any], _Target | None]] = {
            objects.insert: _upload_target,
            objects.upload_partial: _resumable_chunk_target,
            objects.get: _object_target(is_read=True),
            objects.download: _object_target(is_read=True),
            objects.delete: _object_target(is_read=False),
            objects.patch: _object_target(is_read=False),
            objects.copy: _destination_target,
            objects.rewrite: _destination_target,
            objects.compose: _object_target(is_read=False),
        }
        wrapped_routes = []
        for regex, handlers in emulator_server.HANDLERS:
            wrapped = {}
            for method, handler in handlers.items():
                target = targets.get(handler)
                wrapped[method] = _guard(handler, target) if target else handler
            wrapped_routes.append((regex, wrapped))
        emulator_server.HANDLERS = tuple(wrapped_routes)
        _installed = True


def _guard(
    handler: Callable[..., Any], target_of: Callable[[Any, Any], _Target | None]
) -> Callable[..., Any]:
    def guarded(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        if storage in _enforced_storages:
            sources = _source_conditions(request)
            if sources and handler.__name__ in {"copy", "rewrite"}:
                source = _Target(request.params["bucket_name"], request.params["object_id"], sources, True)
                if _refuse(source, storage, response, write_failure=True):
                    return None
            target = target_of(request, storage)
            if target is not None and target.conditions and _refuse(target, storage, response):
                return None
        return handler(request, response, storage, *args, **kwargs)

    guarded.__name__ = f"precondition_checked_{handler.__name__}"
    guarded.__wrapped__ = handler  # type: ignore[attr-defined]
    return guarded


def _conditions(query: dict[str, list[str]]) -> dict[str, int]:
    found = {}
    for name in _CONDITIONS:
        values = query.get(name)
        if values:
            found[name] = int(values[0])
    return found


def _source_conditions(request: Any) -> dict[str, int]:
    found = {}
    for source_name, plain in _SOURCE_CONDITIONS.items():
        values = request.query.get(source_name)
        if values:
            found[plain] = int(values[0])
    return found


def _upload_target(request: Any, storage: Any) -> _Target | None:
    conditions = _conditions(request.query)
    if not conditions:
        return None
    if "upload_id" in request.query:  # some clients POST resumable chunks
        return _resumable_chunk_target(request, storage)
    name = request.query["name"][0] if request.query.get("name") else None
    if name is None:
        data = request.data
        if isinstance(data, dict):
            meta = data.get("meta")
            name = (meta if isinstance(meta, dict) else data).get("name")
    return _Target(request.params["bucket_name"], name, conditions, is_read=False)


def _resumable_chunk_target(request: Any, storage: Any) -> _Target | None:
    # The session URL repeats the initiation query (preconditions included); real GCS checks them when the
    # upload completes, checking on every chunk refuses no upload that GCS would accept in practice.
    conditions = _conditions(request.query)
    if not conditions:
        return None
    from gcp_storage_emulator.exceptions import NotFound

    try:
        pending = storage.get_resumable_file_obj(request.query["upload_id"][0])
    except NotFound:
        return None
    return _Target(pending["bucket"], pending["name"], conditions, is_read=False)


def _object_target(*, is_read: bool) -> Callable[[Any, Any], _Target | None]:
    def target(request: Any, storage: Any) -> _Target | None:
        conditions = _conditions(request.query)
        if not conditions:
            return None
        return _Target(request.params["bucket_name"], request.params["object_id"], conditions, is_read)

    return target


def _destination_target(request: Any, storage: Any) -> _Target | None:
    conditions = _conditions(request.query)
    if not conditions:
        return None
    return _Target(request.params["dest_bucket_name"], request.params["dest_object_id"], conditions, False)


def _refuse(target: _Target, storage: Any, response: Any, *, write_failure: bool = False) -> bool:
    """Writes the GCS failure response and returns True when a precondition of `target` does not hold."""
    from gcp_storage_emulator.exceptions import NotFound

    live: dict[str, Any] | None = None
    if target.name is not None:
        try:
            live = storage.get_file_obj(target.bucket, target.name)
        except NotFound:
            live = None
    if live is None and target.is_read:
        return False  # the handler answers 404, as GCS does
    generation = int(live["generation"]) if live else 0
    metageneration = int(live["metageneration"]) if live else None
    for name, expected in target.conditions.items():
        if name == "ifGenerationMatch":
            holds = generation == expected
        elif name == "ifGenerationNotMatch":
            holds = generation != expected
        elif name == "ifMetagenerationMatch":
            holds = metageneration is not None and metageneration == expected
        else:  # ifMetagenerationNotMatch
            holds = metageneration is not None and metageneration != expected
        if holds:
            continue
        log.debug(
            "precondition %s=%s failed on gs://%s/%s (generation %s)",
            name,
            expected,
            target.bucket,
            target.name,
            generation,
        )
        if target.is_read and name.endswith("NotMatch") and not write_failure:
            response.status = HTTPStatus.NOT_MODIFIED
            return True
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json(_precondition_body(name))
        return True
    return False


def _precondition_body(condition: str) -> dict[str, Any]:
    """The JSON error body GCS sends with a 412."""
    return {
        "error": {
            "code": HTTPStatus.PRECONDITION_FAILED.value,
            "message": _PRECONDITION_MESSAGE,
            "errors": [
                {
                    "domain": "global",
                    "reason": "conditionNotMet",
                    "message": _PRECONDITION_MESSAGE,
                    "locationType": "header",
                    "location": "If-Match",
                    "debugInfo": json.dumps({"condition": condition}),
                }
            ],
        }
    }
