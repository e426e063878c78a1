"""Every limit atrepo enforces, named in one place.

Values follow the specifications and the reference implementations; each is
enforced where data enters (decoders, validators, servers) and can be
overridden in configuration where a server exposes it.
"""

from __future__ import annotations

# --- DAG-CBOR ---------------------------------------------------------------
#: Largest single DAG-CBOR item we decode (a firehose frame's upper bound).
MAX_CBOR_BYTES = 5_000_000
#: Deepest nesting of arrays and maps (data-validation guide suggests 32; we
#: allow some headroom for records while keeping decode memory bounded).
MAX_CBOR_DEPTH = 64
#: Inputs larger than this are pre-scanned for depth before the C decoder runs,
#: so a deeply nested hostile input never builds a huge object graph.
CBOR_PRESCAN_BYTES = 65_536
#: Integer range of the data model (signed 64-bit).
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
#: Integer range JSON consumers can hold exactly (JavaScript safe integers).
MAX_SAFE_INT = 2**53 - 1

# --- CIDs -------------------------------------------------------------------
#: Longest binary CID accepted anywhere (data-validation guide).
MAX_CID_BYTES = 100

# --- Records ----------------------------------------------------------------
#: Largest record block (firehose rule; the guide suggests 1 MiB).
MAX_RECORD_BYTES = 1_000_000
#: Largest record as JSON.
MAX_RECORD_JSON_BYTES = 2 * 1024 * 1024

# --- Identifiers ------------------------------------------------------------
MAX_DID_LENGTH = 2048
MAX_HANDLE_LENGTH = 253
MAX_NSID_LENGTH = 317
MAX_RKEY_LENGTH = 512
MAX_ATURI_LENGTH = 8192
MAX_URI_LENGTH = 8192
MAX_DATETIME_LENGTH = 64
MAX_LANGUAGE_LENGTH = 128
MIN_CID_STRING_LENGTH = 8
MAX_CID_STRING_LENGTH = 256
#: Longest MST key (repo path) in bytes, as the reference implementations cap it.
MAX_MST_KEY_BYTES = 1024

# --- CAR files ----------------------------------------------------------------
#: Largest CAR header (DAG-CBOR ``{roots, version}``); a few roots need ~100 bytes.
MAX_CAR_HEADER_BYTES = 65_536
#: Largest CAR block section (CID + data). Records are capped at 1,000,000
#: bytes and MST nodes are far smaller; this leaves room without letting one
#: varint make the reader buffer an arbitrary amount.
MAX_CAR_BLOCK_BYTES = 2_097_152
#: Most distinct blocks indexed to verify a CAR that is not in the streamable
#: order (``car.CarIndex``, about 60 bytes a block, so at most ~480 MB; a
#: dict of CIDs would take several times that). A repository holds its records
#: plus about 0.27 MST nodes per record. Under the reference host's write rate
#: limits (35,000 points a day, 3 per create) an account gains at most ~4.3M
#: records, ~5.4M blocks, a year; this admits such a repository, and refuses a
#: file padded with millions of tiny blocks before it costs more than that.
MAX_CAR_INDEX_BLOCKS = 8_000_000

# --- Event streams (firehose) -----------------------------------------------
#: Largest whole frame (header + payload) on the repo firehose.
MAX_FRAME_BYTES = 5_000_000
#: Largest frame header ``{op, t}`` (real ones take under 20 bytes). The header
#: is decoded first and alone, so a frame of a type we skip costs this much to
#: read however large or hostile its body.
MAX_FRAME_HEADER_BYTES = 1_024
#: Largest ``#commit.blocks`` CAR slice (2,000,000 bytes, not MiB).
MAX_COMMIT_BLOCKS_BYTES = 2_000_000
#: Largest ``#sync.blocks`` CAR (just the signed commit block).
MAX_SYNC_BLOCKS_BYTES = 10_000
#: Most record operations in one ``#commit``.
MAX_COMMIT_OPS = 200

# --- Merkle Search Tree -------------------------------------------------------
#: Most entries one MST node may hold. Each key independently sits one layer
#: higher with probability 1/4, so the run of same-layer keys inside one node is
#: geometric: P(run >= m) = (3/4)**m. An honest repository of 10 million records
#: has about 2.5 million such runs at layer 0 (fewer above); by the union bound
#: the chance that any node reaches 256 entries is 2.5e6 * (3/4)**256 ~ 3e-26.
#: A key-mined node (cheap: pick adjacent layer-0 keys) hits it and is refused.
MAX_MST_NODE_ENTRIES = 256
#: Highest MST layer a key may sit at (tree height is this + 1). A key reaches
#: layer L with probability 4**-L; for 10 million keys P(any >= 33) is
#: 1e7 * 4**-33 ~ 1.4e-13. Bounds the chains of entry-less nodes a mined key
#: (4**L hashes of work) could force on every lookup.
MAX_MST_LAYER = 32
#: Decoded MST nodes kept by a tree's node cache.
MST_NODE_CACHE_SIZE = 65_536

#: Longest error message kept, in characters. Messages quote what was wrong
#: (a key, a value, a CID); hostile input can make that quote megabytes long,
#: and an error must stay cheap to log and to send back as an XRPC reply.
MAX_ERROR_MESSAGE_CHARS = 1_000
