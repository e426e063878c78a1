"""The error family: one module, a reply for every class, one ``rule`` attribute, capped messages."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import atrepo
from atrepo.core import errors, limits
from atrepo.core.errors import AtrepoError, InvalidCommitEvent, InvalidSyntax, PLCRuleError

#: Generic names of the reference XRPC stack (@atproto/xrpc-server ResponseType) and the
#: named errors of the lexicons and the reference PDS that atrepo answers with.
XRPC_STANDARD = {
    "InvalidRequest",
    "HostBanned",
    "HostNotFound",
    "AuthenticationRequired",
    "Forbidden",
    "PayloadTooLarge",
    "RateLimitExceeded",
    "InternalServerError",
    "MethodNotImplemented",
    "UpstreamFailure",
    "HandleNotFound",
    "AuthMissing",
    "AccountTakedown",
    "InvalidToken",
    "ExpiredToken",
    "RepoNotFound",
    "RepoTakendown",
    "RepoSuspended",
    "RepoDeactivated",
    "RecordNotFound",
    "BlobNotFound",
    "HandleNotAvailable",
    "InvalidHandle",
    "UnsupportedDomain",
    "InvalidPassword",
    "InvalidSwap",
    "NotEnoughResources",
    "MissingJwt",
    "BadJwt",
    "BadJwtType",
    "JwtExpired",
    "BadJwtAudience",
    "BadJwtLexiconMethod",
    "BadJwtIss",
    "BadJwtSignature",
    "DidNotFound",
    "DidDeactivated",
    "CursorTooOld",  # network.bsky.jetstream.subscribeEvents
}


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= _all_subclasses(sub)
    return out


def _import_everything() -> None:
    for info in pkgutil.walk_packages(atrepo.__path__, "atrepo."):
        if not info.name.endswith(".__main__"):  # importing it would run the command line
            importlib.import_module(info.name)


def test_every_error_class_lives_in_errors_py() -> None:
    _import_everything()
    strays = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in _all_subclasses(AtrepoError)
        if c.__module__ != errors.__name__ and c.__module__.startswith("atrepo.")
    )
    assert strays == []


def test_every_error_class_names_its_reply() -> None:
    for cls in {AtrepoError, *_all_subclasses(AtrepoError)}:
        if not cls.__module__.startswith("atrepo."):
            continue
        assert isinstance(cls.xrpc_error, str) and cls.xrpc_error, cls
        assert 400 <= cls.http_status < 600, cls
        assert cls.xrpc_error in XRPC_STANDARD, cls


def test_to_xrpc_body() -> None:
    status, body = errors.InvalidCAR("truncated section", 17).to_xrpc()
    assert status == 400
    assert body == {"error": "InvalidRequest", "message": "truncated section at byte 17"}
    status, body = errors.ResolutionError("plc directory answered 500").to_xrpc()
    assert (status, body["error"]) == (502, "UpstreamFailure")
    assert errors.HandleNotFound("x").to_xrpc()[1]["error"] == "HandleNotFound"


def test_one_rule_attribute() -> None:
    assert InvalidCommitEvent("inversion", "root differs").rule == "inversion"
    assert PLCRuleError("prev", "no such op").rule == "prev"
    assert InvalidSyntax("did", "x", "must start with did:").rule == "must start with did:"
    assert errors.InvalidCAR("x").rule is None
    assert not hasattr(InvalidCommitEvent("size", "big"), "check")


@pytest.mark.parametrize("size", [limits.MAX_ERROR_MESSAGE_CHARS + 1, 2_000_000])
def test_messages_are_capped_keeping_head_and_tail(size: int) -> None:
    quoted = "k" * size
    exc = errors.InvalidMST(f"key {quoted!r}: longer than 1024 bytes")
    text = str(exc)
    assert len(text) <= limits.MAX_ERROR_MESSAGE_CHARS
    assert text.startswith("key 'kkk")
    assert text.endswith("longer than 1024 bytes")
    assert "characters cut" in text


def test_short_messages_untouched() -> None:
    assert str(errors.InvalidCID("bad")) == "bad"
    assert str(errors.MissingBlock("bafy", "record a/b")) == "missing block bafy (record a/b)"


@pytest.mark.parametrize(
    ("cls", "name", "status"),
    [
        (errors.MethodNotImplemented, "MethodNotImplemented", 501),
        (errors.AuthRequired, "AuthenticationRequired", 401),
        (errors.AuthMissing, "AuthMissing", 401),
        (errors.AccountTakedown, "AccountTakedown", 401),
        (errors.InvalidToken, "InvalidToken", 400),
        (errors.ExpiredToken, "ExpiredToken", 400),
        (errors.Forbidden, "Forbidden", 403),
        (errors.RateLimitExceeded, "RateLimitExceeded", 429),
        (errors.RepoNotFound, "RepoNotFound", 400),
        (errors.RecordNotFound, "RecordNotFound", 400),
        (errors.BlobNotFound, "BlobNotFound", 400),
        (errors.InternalServerError, "InternalServerError", 500),
        (errors.UpgradeRequired, "InvalidRequest", 426),
    ],
)
def test_server_errors_answer_as_the_reference(cls: type[AtrepoError], name: str, status: int) -> None:
    assert cls("why").to_xrpc() == (status, {"error": name, "message": "why"})


def test_client_table_maps_each_name_to_a_class_answering_with_it() -> None:
    for name, cls in errors.XRPC_ERROR_CLASSES.items():
        exc = cls("a message")
        assert exc.to_xrpc()[1] == {"error": name, "message": "a message"}
        assert cls.__module__ == errors.__name__


def test_xrpc_error_keeps_the_name_and_status_it_was_given() -> None:
    exc = errors.XrpcError("NotEnoughResources", "busy", 503)
    assert exc.to_xrpc() == (503, {"error": "NotEnoughResources", "message": "busy"})
    assert (exc.error, exc.status) == ("NotEnoughResources", 503)
    assert errors.XrpcError("Odd", "x", 200).to_xrpc()[0] == 500  # never a success status
