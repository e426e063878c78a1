"""Limits for identity data: DID documents, did:plc operations, lookups.

Named here (not in ``core.limits``) because only the identity layer enforces
them; servers and resolvers take them as defaults that configuration may
override.
"""

from __future__ import annotations

from typing import Final

# --- DID documents and resolution ---------------------------------------------
#: Largest DID document body a resolver reads (real documents are ~1 KiB).
MAX_DID_DOCUMENT_BYTES: Final = 64 * 1024
#: Largest ``/.well-known/atproto-did`` body read (a DID plus whitespace).
MAX_WELL_KNOWN_BYTES: Final = 4 * 1024
#: Seconds one DID or handle lookup may take, network included.
LOOKUP_TIMEOUT_S: Final = 10.0
#: Redirects followed by the handle well-known method (DID fetches allow none).
MAX_HANDLE_REDIRECTS: Final = 3
#: Longest handle that can still be looked up by DNS (``_atproto.`` + 244 <= 253).
MAX_DNS_HANDLE_LENGTH: Final = 244
#: Largest DNS response accepted over UDP (EDNS-sized buffer).
MAX_DNS_RESPONSE_BYTES: Final = 4096

# --- Resolver cache ------------------------------------------------------------
#: Seconds a resolved document is served without asking again.
CACHE_TTL_S: Final = 3600.0
#: Further seconds a stale document is served while one refresh runs behind it.
CACHE_STALE_S: Final = 24 * 3600.0
#: Seconds a failed lookup is remembered (keeps a broken DID from hammering).
NEGATIVE_TTL_S: Final = 30.0
#: Entries kept per cache before the least recently used is dropped.
CACHE_MAX_ENTRIES: Final = 100_000

# --- did:plc operations (identity spec §4.2-4.4) --------------------------------
#: Largest signed operation, DAG-CBOR bytes, per the method spec (audit logs).
PLC_OP_MAX_BYTES_SPEC: Final = 7500
#: Largest signed operation the reference directory accepts (new submissions).
PLC_OP_MAX_BYTES: Final = 4000
#: Recovery window: an op may be nullified up to this long after it was stored.
PLC_RECOVERY_WINDOW_MS: Final = 72 * 3600 * 1000
#: Reference directory limits on a submitted operation's fields.
PLC_MAX_ROTATION_KEYS: Final = 10
PLC_MAX_ALSO_KNOWN_AS: Final = 10
PLC_MAX_ALSO_KNOWN_AS_CHARS: Final = 258
PLC_MAX_SERVICES: Final = 10
PLC_MAX_SERVICE_ID_CHARS: Final = 32
PLC_MAX_SERVICE_TYPE_CHARS: Final = 256
PLC_MAX_SERVICE_ENDPOINT_CHARS: Final = 512
PLC_MAX_VERIFICATION_METHODS: Final = 10
PLC_MAX_VERIFICATION_METHOD_ID_CHARS: Final = 32
PLC_MAX_VERIFICATION_METHOD_KEY_CHARS: Final = 256
#: Reference per-DID rate limits: stored ops allowed within each window.
PLC_RATE_LIMITS: Final = ((3600 * 1000, 10), (24 * 3600 * 1000, 30), (7 * 24 * 3600 * 1000, 100))
#: Largest ``count`` of ``GET /export``.
PLC_EXPORT_MAX_COUNT: Final = 1000
#: Largest POST body the directory reads (JSON of a <= 4000-byte CBOR op).
PLC_MAX_REQUEST_BYTES: Final = 32 * 1024
