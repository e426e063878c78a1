"""The few ``app.bsky.*`` methods a host answers itself when no AppView is configured.

Clients expect them from their PDS even though they belong to the Bluesky
application: the MarshalX SDK's ``login()`` calls ``app.bsky.actor.getProfile``
right after ``createSession``, and ``goat`` and account-migration tools call
``getPreferences``/``putPreferences``. With an AppView configured,
``getProfile`` and every other ``app.*`` method go to it (:mod:`atrepo.host.proxy`)
and only preferences stay here. Without one the host answers:

* ``getProfile``: a ``profileViewDetailed`` built from the account's own
  ``app.bsky.actor.profile/self`` record (counts, viewer state and other
  network-wide data are omitted: only an AppView knows them). Errors as the
  reference AppView answers them: an actor that is not a local account (or
  was deleted) is 400 ``InvalidRequest`` "Profile not found"; a taken-down or
  suspended one 400 ``AccountTakedown`` "Account has been suspended"; a
  deactivated one 400 ``AccountDeactivated`` "Account is deactivated".
* ``getPreferences``/``putPreferences``: the account's private preferences,
  stored per account (the reference PDS keeps these locally too, never at the
  AppView). Only the ``app.bsky`` namespace, as the reference: a preference
  whose ``$type`` is elsewhere is refused.
* every other ``app.*`` method: 501 ``MethodNotImplemented`` with a message
  that says why.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from atrepo.core import datamodel
from atrepo.core.cid import CID
from atrepo.core.errors import InvalidRequest, XrpcError
from atrepo.core.syntax import is_valid_at_uri, is_valid_cid_string, is_valid_datetime
from atrepo.store import Account, Preference, SQLiteStore
from atrepo.xrpc import XrpcContext, XrpcRouter

from .auth import AccessCredentials
from .repo_api import _find_account, _get_record

if TYPE_CHECKING:
    from .app import HostContext

__all__ = ["PREFERENCE_NAMESPACE", "UNSERVED_MESSAGE", "register"]

PROFILE_COLLECTION: Final = "app.bsky.actor.profile"
#: The namespace of the preferences this host keeps (the reference's ``putPreferences`` scope).
PREFERENCE_NAMESPACE: Final = "app.bsky"
#: What an ``app.*`` method with no local answer replies (501 ``MethodNotImplemented``).
UNSERVED_MESSAGE: Final = (
    "Method Not Implemented: this host serves app.bsky.actor.getProfile, getPreferences and "
    "putPreferences itself; other app.* methods need an AppView, and none is configured "
    "(set appview_url and appview_did, or name a service with atproto-proxy)"
)


def _profile_error(account: Account | None) -> XrpcError | None:
    """The reference AppView's refusal for an actor, or None when its profile may be shown."""
    if account is None or account.status == "deleted":
        return XrpcError("InvalidRequest", "Profile not found", 400)
    if account.status in ("takendown", "suspended"):
        return XrpcError("AccountTakedown", "Account has been suspended", 400)
    if account.status == "deactivated":
        return XrpcError("AccountDeactivated", "Account is deactivated", 400)
    return None


def _blob_url(host: HostContext, did: str, blob: Any) -> str | None:
    """A URL serving the blob a profile field names (``sync.getBlob``: no CDN without an AppView)."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if not isinstance(ref, CID):  # legacy ``{cid, mimeType}`` form
        legacy = blob.get("cid")
        if not is_valid_cid_string(legacy):
            return None
        ref = CID.parse(legacy)
    return f"{host.public_url}/xrpc/com.atproto.sync.getBlob?did={did}&cid={ref}"


def _self_labels(did: str, uri: str, cid: CID, record: dict[str, Any], cts: str) -> list[dict[str, Any]]:
    """The record's self-labels as label views, as the AppView presents them (``src`` = the account)."""
    labels = record.get("labels")
    if not isinstance(labels, dict) or not isinstance(labels.get("values"), list):
        return []
    out = []
    for value in labels["values"]:
        val = value.get("val") if isinstance(value, dict) else None
        if isinstance(val, str) and 0 < len(val.encode()) <= 128:
            out.append({"src": did, "uri": uri, "cid": str(cid), "val": val, "cts": cts})
    return out


def profile_view(
    host: HostContext, account: Account, record: Any, uri: str, cid: CID | None
) -> dict[str, Any]:
    """``app.bsky.actor.defs#profileViewDetailed`` of a local account from its profile record.

    Fields are copied only when they have the lexicon's type: a record written
    with ``validate: false`` must not make the view invalid.
    """
    view: dict[str, Any] = {"did": account.did, "handle": account.handle}
    if not isinstance(record, dict) or cid is None:
        return view
    for name in ("displayName", "description", "pronouns"):
        if isinstance(record.get(name), str):
            view[name] = record[name]
    website = record.get("website")
    if isinstance(website, str) and ":" in website:
        view["website"] = website
    for name in ("avatar", "banner"):
        url = _blob_url(host, account.did, record.get(name))
        if url is not None:
            view[name] = url
    pinned = record.get("pinnedPost")
    if (
        isinstance(pinned, dict)
        and is_valid_at_uri(pinned.get("uri"))
        and is_valid_cid_string(pinned.get("cid"))
    ):
        view["pinnedPost"] = {"uri": pinned["uri"], "cid": pinned["cid"]}
    created = record.get("createdAt")
    if is_valid_datetime(created):
        view["createdAt"] = created
    labels = _self_labels(account.did, uri, cid, record, created if is_valid_datetime(created) else "")
    if labels and all(label["cts"] for label in labels):
        view["labels"] = labels
    return view


def _profile(store: SQLiteStore, actor: str) -> tuple[Account | None, Any, str, CID | None]:
    """The account an actor names and its profile record (None when it has none), one snapshot."""
    with store.snapshot():
        account = _find_account(store, actor)
        if account is None:
            return None, None, "", None
        record = _get_record(store, account.did, PROFILE_COLLECTION, "self")
    if record is None:
        return account, None, "", None
    return account, record.value, record.uri, record.cid


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare ``getProfile``, ``getPreferences``, ``putPreferences`` and the 501 of other ``app.*``."""
    router.explain_unserved("app", UNSERVED_MESSAGE)

    async def get_profile(ctx: XrpcContext) -> dict[str, Any]:
        account, record, uri, cid = await host.worker.read(_profile, ctx.params["actor"])
        refusal = _profile_error(account)
        if refusal is not None:
            raise refusal
        assert account is not None
        return profile_view(host, account, record, uri, cid)

    if host.config.appview_url is None:  # with an AppView, profiles come from it (proxied)
        router.add("app.bsky.actor.getProfile", get_profile)

    @router.query("app.bsky.actor.getPreferences", auth=host.tokens.verify_access)
    async def get_preferences(ctx: XrpcContext) -> dict[str, Any]:
        creds: AccessCredentials = ctx.auth
        stored = await host.worker.read(SQLiteStore.get_preferences, creds.did, PREFERENCE_NAMESPACE)
        return {"preferences": [datamodel.parse_json(pref.value) for pref in stored]}

    @router.procedure("app.bsky.actor.putPreferences", auth=host.tokens.verify_access)
    async def put_preferences(ctx: XrpcContext) -> None:
        creds: AccessCredentials = ctx.auth
        prefs: list[Preference] = []
        for value in ctx.input["preferences"]:
            name = value.get("$type") if isinstance(value, dict) else None
            if not isinstance(name, str):
                raise InvalidRequest("Preference is missing a $type")
            if not (name == PREFERENCE_NAMESPACE or name.startswith(PREFERENCE_NAMESPACE + ".")):
                raise InvalidRequest(f"Some preferences are not in the {PREFERENCE_NAMESPACE} namespace")
            text = json.dumps(datamodel.value_to_json(value), ensure_ascii=False, separators=(",", ":"))
            prefs.append(Preference(name, text))
        await host.worker.run(SQLiteStore.put_preferences, creds.did, PREFERENCE_NAMESPACE, prefs)
