"""Signing keys for atproto: P-256 and secp256k1, did:key and Multikey.

atproto signatures are always ECDSA over SHA-256 of the exact bytes, encoded as
64 bytes ``r || s`` with low-S mandatory; DER and high-S encodings are invalid
even though they are mathematically valid ECDSA. Neither backing library
enforces that, so every rule is checked here before the library is asked.

* secp256k1 (``"k256"``, JWT ``ES256K``) goes straight to libsecp256k1 through
  coincurve's cffi binding: compact signature parse plus verify, no DER round
  trip and never OpenSSL.
* P-256 (``"p256"``, JWT ``ES256``) goes through ``cryptography``: the parsed
  OpenSSL key is kept inside the :class:`PublicKey` and the digest is computed
  with hashlib and passed as ``Prehashed``, which is the faster path.

Public keys are immutable and compare by ``(curve, compressed bytes)``. The
string parsers are cached because every firehose event is verified against a
key parsed from a DID document.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from typing import TYPE_CHECKING, ClassVar, Final, Literal, NoReturn

from coincurve import PrivateKey as _CCPrivateKey
from coincurve import PublicKey as _CCPublicKey

# coincurve's public API only verifies DER signatures; the cffi binding it is
# built on (pinned by coincurve>=21,<22) lets us parse the 64-byte compact form
# directly, which is both stricter and faster.
from coincurve._libsecp256k1 import ffi as _ffi
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT as _CC_CONTEXT

from atrepo.core.errors import InvalidKey, InvalidSignature
from atrepo.core.multibase import b58decode, b58encode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# ``cryptography`` (P-256 only) is imported where a P-256 key first needs it:
# loading OpenSSL's bindings costs ~20 ms and ~10 MB, which a process that only
# meets secp256k1 keys (most repositories) never has to pay.

__all__ = [
    "DID_KEY_PREFIX",
    "K256_ORDER",
    "LEGACY_SUITES",
    "MULTICODEC_PRIVATE",
    "MULTICODEC_PUBLIC",
    "P256_ORDER",
    "SUPPORTED_CURVES",
    "Curve",
    "K256PrivateKey",
    "K256PublicKey",
    "P256PrivateKey",
    "P256PublicKey",
    "PrivateKey",
    "PublicKey",
    "parse_did_key",
    "parse_legacy_multibase",
    "parse_multikey",
]

Curve = Literal["p256", "k256"]
SUPPORTED_CURVES: Final[tuple[Curve, ...]] = ("p256", "k256")

#: Group orders n (repository spec §5.1); low-S means s <= n // 2.
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
K256_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

#: Multicodec code -> curve, for public keys (did:key / Multikey) and private keys.
MULTICODEC_PUBLIC: Final[dict[int, Curve]] = {0x1200: "p256", 0xE7: "k256"}
MULTICODEC_PRIVATE: Final[dict[int, Curve]] = {0x1306: "p256", 0x1301: "k256"}
_CODEC_NAMES: Final = {
    0x1200: "p256-pub",
    0xE7: "secp256k1-pub",
    0x1306: "p256-priv",
    0x1301: "secp256k1-priv",
}

#: Legacy DID-document verification-method types (no multicodec) -> curve.
LEGACY_SUITES: Final[dict[str, Curve]] = {
    "EcdsaSecp256r1VerificationKey2019": "p256",
    "EcdsaSecp256k1VerificationKey2019": "k256",
}

DID_KEY_PREFIX: Final = "did:key:"
#: A multibase key is at most ~95 characters; refusing longer input early keeps
#: the quadratic base58 decoder away from hostile megabyte strings.
_MAX_MULTIBASE_CHARS: Final = 128
#: Parsed keys kept per parser; DID documents repeat heavily on the firehose.
_PARSE_CACHE_SIZE: Final = 8192

_CC_CTX: Final = _CC_CONTEXT.ctx
_sha256 = hashlib.sha256


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:77] + "...")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes) -> tuple[int, int]:
    """Minimal unsigned LEB128 (multiformats rule); returns (value, length)."""
    value = 0
    for i, byte in enumerate(buf[:4]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                raise ValueError("non-minimal multicodec varint")
            return value, i + 1
    raise ValueError("unterminated multicodec varint")


def _check_curve(curve: str) -> Curve:
    if curve not in SUPPORTED_CURVES:
        raise InvalidKey(f"unsupported curve {curve!r} (expected one of {', '.join(SUPPORTED_CURVES)})")
    return curve


def _decode_z(text: str, what: str, *, secret: bool = False) -> bytes:
    """``z`` + base58btc body -> bytes; errors name what was parsed (never a secret)."""
    label = what if secret else f"{what} {_shown(text)}"
    if not text.startswith("z"):
        raise InvalidKey(f"{label}: missing 'z' (base58btc multibase) prefix")
    if len(text) > _MAX_MULTIBASE_CHARS:
        raise InvalidKey(f"{label}: too long ({len(text)} characters)")
    try:
        return b58decode(text[1:])
    except ValueError as exc:
        detail = "invalid character" if secret else str(exc)
        raise InvalidKey(f"{label}: bad base58: {detail}") from None


def _split_codec(raw: bytes, label: str) -> tuple[int, bytes]:
    try:
        code, used = _read_varint(raw)
    except ValueError as exc:
        raise InvalidKey(f"{label}: {exc}") from None
    return code, raw[used:]


# --------------------------------------------------------------------------
# Public keys


@functools.cache
def _p256_curve() -> ec.SECP256R1:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.SECP256R1()


@functools.cache
def _p256_prehashed() -> ec.ECDSA:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    return ec.ECDSA(Prehashed(hashes.SHA256()))


class PublicKey:
    """An immutable public key on one of the atproto curves.

    Build with :meth:`from_compressed` or the ``parse_*`` functions; the
    per-curve subclasses hold the library object used to verify.
    """

    __slots__ = ("_hash", "compressed")

    curve: ClassVar[Curve]
    jwt_alg: ClassVar[str]
    order: ClassVar[int]
    multicodec: ClassVar[int]
    compressed: bytes
    _hash: int

    def __init__(self) -> None:
        raise TypeError("use PublicKey.from_compressed() or a parse_* function")

    @staticmethod
    def from_compressed(curve: Curve, raw: bytes) -> PublicKey:
        """The key for a 33-byte compressed SEC1 point; rejects off-curve points."""
        cls = _PUBLIC_CLASSES[_check_curve(curve)]
        if len(raw) != 33:
            raise InvalidKey(f"{curve} compressed key is {len(raw)} bytes, expected 33")
        return cls._from_sec1(bytes(raw))

    @classmethod
    def _from_sec1(cls, raw: bytes) -> PublicKey:
        """Compressed (33) or uncompressed (65) point -> key; hybrid forms are refused."""
        if len(raw) == 33:
            if raw[0] not in (2, 3):
                raise InvalidKey(f"{cls.curve} compressed key starts with 0x{raw[0]:02x}, expected 0x02/0x03")
        elif len(raw) == 65:
            if raw[0] != 4:
                raise InvalidKey(f"{cls.curve} uncompressed key starts with 0x{raw[0]:02x}, expected 0x04")
        else:
            raise InvalidKey(f"{cls.curve} key is {len(raw)} bytes, expected 33 (compressed) or 65")
        self = object.__new__(cls)
        compressed = self._load(raw)
        object.__setattr__(self, "compressed", compressed)
        object.__setattr__(self, "_hash", hash((cls.curve, compressed)))
        return self

    def _load(self, raw: bytes) -> bytes:
        """Parse and validate the point, keep the library object, return compressed bytes."""
        raise NotImplementedError

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.curve == other.curve and self.compressed == other.compressed

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.did_key()!r})"

    def multikey(self) -> str:
        """``z...`` Multikey form, as in a DID document's ``publicKeyMultibase``."""
        return "z" + b58encode(_varint(self.multicodec) + self.compressed)

    def did_key(self) -> str:
        """``did:key:z...`` form, as PLC rotation keys and service auth use it."""
        return DID_KEY_PREFIX + self.multikey()

    def uncompressed(self) -> bytes:
        """65-byte ``04 || X || Y`` point (JWK and legacy consumers want it)."""
        raise NotImplementedError

    def _verify_digest(self, digest: bytes, sig: bytes) -> bool:
        raise NotImplementedError

    def verify(self, data: bytes, sig: bytes) -> bool:
        """True iff ``sig`` is a valid 64-byte low-S ``r || s`` signature of SHA-256(data)."""
        if len(sig) != 64:
            return False
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        n = self.order
        if not (0 < r < n and 0 < s <= n >> 1):
            return False
        return self._verify_digest(_sha256(data).digest(), bytes(sig))

    def check(self, data: bytes, sig: bytes) -> None:
        """Like :meth:`verify` but raise :class:`InvalidSignature` naming the reason."""
        if len(sig) != 64:
            hint = " (DER?)" if len(sig) > 8 and sig[0] == 0x30 else ""
            raise InvalidSignature(f"signature is {len(sig)} bytes, expected 64{hint}")
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        n = self.order
        if not 0 < r < n:
            raise InvalidSignature("signature r is out of range [1, n-1]")
        if not 0 < s < n:
            raise InvalidSignature("signature s is out of range [1, n-1]")
        if s > n >> 1:
            raise InvalidSignature("high-S signature")
        if not self._verify_digest(_sha256(data).digest(), bytes(sig)):
            raise InvalidSignature("signature does not verify")


class K256PublicKey(PublicKey):
    """secp256k1 public key; verification is libsecp256k1 only."""

    __slots__ = ("_point", "_point_owner")

    curve: ClassVar[Curve] = "k256"
    jwt_alg: ClassVar[str] = "ES256K"
    order: ClassVar[int] = K256_ORDER
    multicodec: ClassVar[int] = 0xE7
    _point: object
    _point_owner: _CCPublicKey

    def _load(self, raw: bytes) -> bytes:
        try:
            key = _CCPublicKey(raw)
        except ValueError:
            raise InvalidKey(f"k256 key {raw.hex()} is not a point on the curve") from None
        object.__setattr__(self, "_point_owner", key)
        object.__setattr__(self, "_point", key.public_key)
        return key.format(compressed=True)

    def uncompressed(self) -> bytes:
        return self._point_owner.format(compressed=False)

    def _verify_digest(self, digest: bytes, sig: bytes) -> bool:
        parsed = _ffi.new("secp256k1_ecdsa_signature *")
        if not _lib.secp256k1_ecdsa_signature_parse_compact(_CC_CTX, parsed, sig):
            return False
        return bool(_lib.secp256k1_ecdsa_verify(_CC_CTX, parsed, digest, self._point))


class P256PublicKey(PublicKey):
    """NIST P-256 public key; the parsed OpenSSL key is kept for fast verification."""

    __slots__ = ("_key",)

    curve: ClassVar[Curve] = "p256"
    jwt_alg: ClassVar[str] = "ES256"
    order: ClassVar[int] = P256_ORDER
    multicodec: ClassVar[int] = 0x1200
    _key: ec.EllipticCurvePublicKey

    def _load(self, raw: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(_p256_curve(), raw)
        except ValueError:
            raise InvalidKey(f"p256 key {raw.hex()} is not a point on the curve") from None
        object.__setattr__(self, "_key", key)
        return key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)

    def uncompressed(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self._key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def _verify_digest(self, digest: bytes, sig: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            self._key.verify(der, digest, _p256_prehashed())
        except CryptoInvalidSignature:
            return False
        return True


_PUBLIC_CLASSES: Final[dict[Curve, type[PublicKey]]] = {"p256": P256PublicKey, "k256": K256PublicKey}


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_multikey(text: str) -> PublicKey:
    """Parse a Multikey ``z...`` string (p256-pub or secp256k1-pub multicodec)."""
    raw = _decode_z(text, "multikey")
    code, body = _split_codec(raw, f"multikey {_shown(text)}")
    curve = MULTICODEC_PUBLIC.get(code)
    if curve is None:
        if code in MULTICODEC_PRIVATE:
            raise InvalidKey(
                f"multikey {_shown(text)}: multicodec 0x{code:x} ({_CODEC_NAMES[code]}) is a private key"
            )
        raise InvalidKey(
            f"multikey {_shown(text)}: unknown multicodec 0x{code:x} "
            "(expected p256-pub 0x1200 or secp256k1-pub 0xe7)"
        )
    try:
        return _PUBLIC_CLASSES[curve]._from_sec1(body)
    except InvalidKey as exc:
        raise InvalidKey(f"multikey {_shown(text)}: {exc}") from None


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_did_key(text: str) -> PublicKey:
    """Parse ``did:key:z...`` into a public key (same rules as :func:`parse_multikey`)."""
    if not text.startswith(DID_KEY_PREFIX):
        raise InvalidKey(f"did:key {_shown(text)}: missing 'did:key:' prefix")
    try:
        return parse_multikey(text[len(DID_KEY_PREFIX) :])
    except InvalidKey as exc:
        raise InvalidKey(f"did:key {_shown(text)}: {exc}") from None


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_legacy_multibase(text: str, curve: Curve) -> PublicKey:
    """Parse a legacy ``EcdsaSecp256*VerificationKey2019`` ``publicKeyMultibase``.

    Those carry ``z`` + base58btc of the raw SEC1 point with no multicodec; the
    spec says 65-byte uncompressed, deployed data and fixtures use 33-byte
    compressed, so both are accepted.
    """
    cls = _PUBLIC_CLASSES[_check_curve(curve)]
    raw = _decode_z(text, f"legacy {curve} multibase key")
    try:
        return cls._from_sec1(raw)
    except InvalidKey as exc:
        raise InvalidKey(f"legacy {curve} multibase key {_shown(text)}: {exc}") from None


# --------------------------------------------------------------------------
# Private keys


class PrivateKey:
    """A signing keypair. Signatures are always 64-byte ``r || s`` with low-S."""

    __slots__ = ("public_key",)

    curve: ClassVar[Curve]
    order: ClassVar[int]
    multicodec: ClassVar[int]
    public_key: PublicKey

    def __init__(self) -> None:
        raise TypeError("use PrivateKey.generate(), from_bytes() or from_multibase()")

    @staticmethod
    def generate(curve: Curve) -> PrivateKey:
        """A fresh key from the operating system's CSPRNG."""
        cls = _PRIVATE_CLASSES[_check_curve(curve)]
        while True:
            raw = os.urandom(32)
            if 0 < int.from_bytes(raw, "big") < cls.order:
                return cls._from_valid(raw)

    @staticmethod
    def from_bytes(curve: Curve, raw: bytes) -> PrivateKey:
        """The key for a 32-byte big-endian scalar in [1, n-1]."""
        cls = _PRIVATE_CLASSES[_check_curve(curve)]
        if len(raw) != 32:
            raise InvalidKey(f"{curve} private key is {len(raw)} bytes, expected 32")
        if not 0 < int.from_bytes(raw, "big") < cls.order:
            raise InvalidKey(f"{curve} private key scalar is out of range [1, n-1]")
        return cls._from_valid(bytes(raw))

    @staticmethod
    def from_multibase(text: str) -> PrivateKey:
        """Parse ``z`` + base58btc(varint(p256-priv | secp256k1-priv) || 32-byte scalar)."""
        raw = _decode_z(text, "private multikey", secret=True)
        code, body = _split_codec(raw, "private multikey")
        curve = MULTICODEC_PRIVATE.get(code)
        if curve is None:
            name = _CODEC_NAMES.get(code)
            kind = f" ({name}, a public key)" if name else ""
            raise InvalidKey(
                f"private multikey: unexpected multicodec 0x{code:x}{kind} "
                "(expected p256-priv 0x1306 or secp256k1-priv 0x1301)"
            )
        return PrivateKey.from_bytes(curve, body)

    @classmethod
    def _from_valid(cls, raw: bytes) -> PrivateKey:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The 32-byte big-endian scalar. Handle with care."""
        raise NotImplementedError

    def to_multibase(self) -> str:
        """``z`` + base58btc with the private-key multicodec (what atproto tools export)."""
        return "z" + b58encode(_varint(self.multicodec) + self.to_bytes())

    def _sign_rs(self, data: bytes, deterministic: bool) -> tuple[int, int]:
        raise NotImplementedError

    def sign(self, data: bytes, *, deterministic: bool = True) -> bytes:
        """Sign SHA-256(data); 64-byte ``r || s`` normalized to low-S.

        ``deterministic`` selects RFC 6979 nonces; ``False`` mixes fresh OS
        entropy into the nonce (both give equally valid signatures).
        """
        r, s = self._sign_rs(data, deterministic)
        n = self.order
        if s > n >> 1:
            s = n - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return self.curve == other.curve and hmac.compare_digest(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        # Never show the secret; the public half identifies the key.
        return f"{type(self).__name__}(public={self.public_key.did_key()!r})"


class K256PrivateKey(PrivateKey):
    """secp256k1 keypair signing with libsecp256k1 (always low-S natively)."""

    __slots__ = ("_secret",)

    curve: ClassVar[Curve] = "k256"
    order: ClassVar[int] = K256_ORDER
    multicodec: ClassVar[int] = 0x1301
    _secret: bytes

    @classmethod
    def _from_valid(cls, raw: bytes) -> PrivateKey:
        self = object.__new__(cls)
        object.__setattr__(self, "_secret", raw)
        pub = _CCPrivateKey(raw).public_key.format(compressed=True)
        object.__setattr__(self, "public_key", K256PublicKey._from_sec1(pub))
        return self

    def to_bytes(self) -> bytes:
        return self._secret

    def _sign_rs(self, data: bytes, deterministic: bool) -> tuple[int, int]:
        # Default nonce function is RFC 6979; its optional 32-byte "extra data"
        # input is how libsecp256k1 takes added entropy for randomized signing.
        extra = _ffi.NULL if deterministic else _ffi.new("unsigned char[32]", os.urandom(32))
        parsed = _ffi.new("secp256k1_ecdsa_signature *")
        digest = _sha256(data).digest()
        if not _lib.secp256k1_ecdsa_sign(_CC_CTX, parsed, digest, self._secret, _ffi.NULL, extra):
            raise RuntimeError("libsecp256k1 failed to sign")  # pragma: no cover - valid key checked
        out = _ffi.new("unsigned char[64]")
        _lib.secp256k1_ecdsa_signature_serialize_compact(_CC_CTX, out, parsed)
        compact = bytes(_ffi.buffer(out, 64))
        return int.from_bytes(compact[:32], "big"), int.from_bytes(compact[32:], "big")


class P256PrivateKey(PrivateKey):
    """NIST P-256 keypair signing with OpenSSL via ``cryptography``."""

    __slots__ = ("_key",)

    curve: ClassVar[Curve] = "p256"
    order: ClassVar[int] = P256_ORDER
    multicodec: ClassVar[int] = 0x1306
    _key: ec.EllipticCurvePrivateKey

    @classmethod
    def _from_valid(cls, raw: bytes) -> PrivateKey:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self = object.__new__(cls)
        key = ec.derive_private_key(int.from_bytes(raw, "big"), _p256_curve())
        object.__setattr__(self, "_key", key)
        pub = key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
        object.__setattr__(self, "public_key", P256PublicKey._from_sec1(pub))
        return self

    def to_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def _sign_rs(self, data: bytes, deterministic: bool) -> tuple[int, int]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

        # deterministic_signing needs OpenSSL >= 3.2; older builds raise
        # UnsupportedAlgorithm rather than silently signing with a random nonce.
        algo = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=deterministic)
        der = self._key.sign(_sha256(data).digest(), algo)
        return decode_dss_signature(der)


_PRIVATE_CLASSES: Final[dict[Curve, type[PrivateKey]]] = {"p256": P256PrivateKey, "k256": K256PrivateKey}
