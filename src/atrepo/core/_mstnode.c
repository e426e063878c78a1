/*
 * Optional C fast path for decoding MST nodes (atrepo.core.mst.node.decode_node).
 *
 * Why: validating a #commit reads every node on each op's path, and the
 * pure-Python decoder (the C DAG-CBOR codec, then a Python loop over the
 * entries) spends most of its time making and inspecting objects. A canonical
 * node has one exact byte layout, so this module checks that layout directly
 * and builds only what the tree keeps: the full keys, the value and subtree
 * links as CID objects, and the encoded pieces re-encoding reuses.
 *
 * Contract: parse(data, ...) either returns (keys, vals, subs, heads, tails, layer) for a
 * node that the pure-Python decoder accepts with exactly these keys, values and
 * subtrees, or returns None. None means "not proven valid here": the caller
 * then runs the pure-Python decoder, which accepts the node or raises the
 * error it always raised. So this module never has to name an error, and
 * being too strict only costs speed. What it proves, byte by byte:
 *
 *   map(2) "e": array(n <= max_entries) of
 *       map(4) "k": bytes, "p": uint, "t": null | dag-cbor sha256 link,
 *              "v": dag-cbor or raw sha256 link
 *   "l": null | dag-cbor sha256 link, and nothing after it;
 *
 * every length and integer in its shortest form; the first entry's p is 0;
 * later p at most the previous key's length and the shortest compression (the
 * suffix does not start with the byte the prefix stops before); every key at
 * most max_key bytes (measured before it is built), strictly increasing, and
 * of MST key syntax (collection/rkey of A-Za-z0-9._~:- with neither segment
 * "." or ".."); every key of one layer (leading zero bits of its SHA-256, in
 * pairs), at most max_layer, and no subtree link at layer 0 (layer -1 for a
 * node without keys).
 *
 * The layout is DAG-CBOR's canonical one: map keys sorted, minimal heads, tag
 * 42 over a byte string starting 0x00. Anything else (other link forms, big
 * nodes, any deviation) returns None.
 *
 * Key layers need SHA-256 of every key. Calling back into hashlib per key
 * would cost more than the rest of the parse, so it is computed here: with
 * the x86 SHA extensions when the CPU has them (checked once at import), else
 * a plain FIPS 180-4 implementation. Both are tested against hashlib
 * (_digest, _key_layers: test hooks only).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* The CID class and the offset of its one slot ("raw"), set by setup(). */
static PyTypeObject *cid_type = NULL;
static Py_ssize_t cid_raw_offset = -1;

/* 36-byte CIDv1 prefixes: dag-cbor and raw codecs, sha2-256, 32-byte digest. */
static const unsigned char PFX_DAG_CBOR[4] = {0x01, 0x71, 0x12, 0x20};
static const unsigned char PFX_RAW[4] = {0x01, 0x55, 0x12, 0x20};
/* Tag 42, byte string of 37 bytes, the 0x00 multibase prefix. */
static const unsigned char LINK_HEAD[5] = {0xd8, 0x2a, 0x58, 0x25, 0x00};

#define LINK_BYTES 41 /* LINK_HEAD + 36-byte CID */

/* Characters of a key segment: A-Z a-z 0-9 . _ ~ : - */
static unsigned char key_char[256];

static void init_key_chars(void) {
    memset(key_char, 0, sizeof key_char);
    for (int c = 'A'; c <= 'Z'; c++) key_char[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) key_char[c] = 1;
    for (int c = '0'; c <= '9'; c++) key_char[c] = 1;
    key_char['.'] = key_char['_'] = key_char['~'] = key_char[':'] = key_char['-'] = 1;
}

/* Whether a segment is "." or "..", which the key syntax forbids. */
static int dot_segment(const unsigned char *s, Py_ssize_t n) {
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

/* MST key syntax: exactly one '/', both segments non-empty, of key characters, neither "." nor "..". */
static int key_ok(const unsigned char *key, Py_ssize_t n) {
    Py_ssize_t slash = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = key[i];
        if (c == '/') {
            if (slash >= 0) return 0;
            slash = i;
        } else if (!key_char[c]) {
            return 0;
        }
    }
    if (slash <= 0 || slash == n - 1) return 0;
    if (dot_segment(key, slash) || dot_segment(key + slash + 1, n - slash - 1)) return 0;
    return 1;
}

/* --- SHA-256 (FIPS 180-4), for key layers: keys are short, so a plain implementation is enough. */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *block) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
               ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_SHANI_PATH 1

/*
 * The same compression with the x86 SHA extensions, where the CPU has them
 * (chosen at run time): four rounds per step, message words scheduled with
 * sha256msg1/msg2. State is kept as the (ABEF, CDGH) pairs the instructions use.
 */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_blocks_shani(uint32_t h[8],
                                                                            const unsigned char *data,
                                                                            Py_ssize_t blocks) {
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);
    __m128i state1 = _mm_loadu_si128((const __m128i *)&h[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);             /* CDAB */
    state1 = _mm_shuffle_epi32(state1, 0x1B);       /* EFGH */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8); /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);    /* CDGH */
    for (Py_ssize_t b = 0; b < blocks; b++) {
        const unsigned char *block = data + 64 * b;
        __m128i abef = state0, cdgh = state1;
        __m128i w[4];
        for (int i = 0; i < 16; i++) {
            __m128i words;
            if (i < 4) {
                words = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), mask);
            } else {
                /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four words at a time */
                __m128i sum = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
                sum = _mm_add_epi32(sum, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
                words = _mm_sha256msg2_epu32(sum, w[(i + 3) & 3]);
            }
            w[i & 3] = words;
            __m128i msg = _mm_add_epi32(words, _mm_loadu_si128((const __m128i *)&K256[4 * i]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
            msg = _mm_shuffle_epi32(msg, 0x0E);
            state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
        }
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
    }
    tmp = _mm_shuffle_epi32(state0, 0x1B);          /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);       /* DCHG */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0);    /* DCBA */
    state1 = _mm_alignr_epi8(state1, tmp, 8);       /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], state0);
    _mm_storeu_si128((__m128i *)&h[4], state1);
}

static int have_shani = 0;

static void detect_shani(void) {
    __builtin_cpu_init();
    have_shani = __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1") &&
                 __builtin_cpu_supports("ssse3");
}
#else
static void detect_shani(void) {}
#endif

/* Compress `blocks` 64-byte blocks into h, with the SHA extensions when there are some. */
static void sha256_blocks(uint32_t h[8], const unsigned char *data, Py_ssize_t blocks) {
#ifdef HAVE_SHANI_PATH
    if (have_shani) {
        sha256_blocks_shani(h, data, blocks);
        return;
    }
#endif
    for (Py_ssize_t b = 0; b < blocks; b++) sha256_block(h, data + 64 * b);
}

/* The digest of msg[0:n] as eight big-endian words. */
static void sha256(const unsigned char *msg, Py_ssize_t n, uint32_t h[8]) {
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    unsigned char last[128];
    memcpy(h, H0, sizeof H0);
    Py_ssize_t full = n & ~(Py_ssize_t)63;
    sha256_blocks(h, msg, full / 64);
    Py_ssize_t rest = n - full;
    memset(last, 0, sizeof last);
    if (rest) memcpy(last, msg + full, (size_t)rest);
    last[rest] = 0x80;
    Py_ssize_t blocks = rest + 9 > 64 ? 2 : 1;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) last[blocks * 64 - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha256_blocks(h, last, blocks);
}

/* A key's layer: leading zero bits of SHA-256(key), counted in pairs (fanout 4). */
static int key_layer(const unsigned char *key, Py_ssize_t n) {
    uint32_t h[8];
    sha256(key, n, h);
    int zeros = 0;
    for (int i = 0; i < 8; i++) {
        if (h[i] == 0) {
            zeros += 32;
            continue;
        }
        uint32_t word = h[i];
        while (!(word & 0x80000000u)) {
            zeros++;
            word <<= 1;
        }
        break;
    }
    return zeros >> 1;
}

/*
 * Read a CBOR head of major type `major` in its shortest form at *pos; store
 * its argument in *value. Returns 0 when the bytes are not such a head.
 */
static int read_head(const unsigned char *d, Py_ssize_t end, Py_ssize_t *pos, int major, uint64_t *value) {
    Py_ssize_t p = *pos;
    if (p >= end) return 0;
    unsigned char b = d[p];
    if ((b >> 5) != major) return 0;
    unsigned char info = b & 0x1f;
    uint64_t v;
    if (info < 24) {
        v = info;
        p += 1;
    } else if (info == 24) {
        if (p + 2 > end) return 0;
        v = d[p + 1];
        if (v < 24) return 0;
        p += 2;
    } else if (info == 25) {
        if (p + 3 > end) return 0;
        v = ((uint64_t)d[p + 1] << 8) | d[p + 2];
        if (v < 0x100) return 0;
        p += 3;
    } else if (info == 26) {
        if (p + 5 > end) return 0;
        v = ((uint64_t)d[p + 1] << 24) | ((uint64_t)d[p + 2] << 16) | ((uint64_t)d[p + 3] << 8) | d[p + 4];
        if (v < 0x10000) return 0;
        p += 5;
    } else {
        return 0; /* 8-byte arguments and indefinite lengths: never in a node we can take */
    }
    *pos = p;
    *value = v;
    return 1;
}

/* Expect the one-character text key `name` (0x61 name) at *pos. */
static int read_key(const unsigned char *d, Py_ssize_t end, Py_ssize_t *pos, char name) {
    Py_ssize_t p = *pos;
    if (p + 2 > end || d[p] != 0x61 || d[p + 1] != (unsigned char)name) return 0;
    *pos = p + 2;
    return 1;
}

/* A CID object over raw[0:36], built without running CID.__init__ (the prefix was checked here). */
static PyObject *make_cid(const unsigned char *raw) {
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)raw, 36);
    if (bytes == NULL) return NULL;
    PyObject *cid = cid_type->tp_alloc(cid_type, 0);
    if (cid == NULL) {
        Py_DECREF(bytes);
        return NULL;
    }
    *(PyObject **)((char *)cid + cid_raw_offset) = bytes;
    return cid;
}

/*
 * A link at *pos: 1 and *out set (a new reference; None for null when
 * `nullable`), 0 when the bytes are not an acceptable link, -1 on a Python error.
 * `raw_ok` also accepts the raw codec (record values may be raw blocks).
 */
static int read_link(const unsigned char *d, Py_ssize_t end, Py_ssize_t *pos, int nullable, int raw_ok,
                     PyObject **out) {
    Py_ssize_t p = *pos;
    if (p >= end) return 0;
    if (d[p] == 0xf6) {
        if (!nullable) return 0;
        *out = Py_NewRef(Py_None);
        *pos = p + 1;
        return 1;
    }
    if (p + LINK_BYTES > end || memcmp(d + p, LINK_HEAD, 5) != 0) return 0;
    const unsigned char *raw = d + p + 5;
    if (memcmp(raw, PFX_DAG_CBOR, 4) != 0 && !(raw_ok && memcmp(raw, PFX_RAW, 4) == 0)) return 0;
    PyObject *cid = make_cid(raw);
    if (cid == NULL) return -1;
    *out = cid;
    *pos = p + LINK_BYTES;
    return 1;
}

/* Append `item` (a new reference, stolen) to `list`; 0 on failure. */
static int append_steal(PyObject *list, PyObject *item) {
    if (item == NULL) return 0;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc == 0;
}

static PyObject *parse(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse(data, max_key, max_entries, max_layer)");
        return NULL;
    }
    if (cid_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_mstnode.setup() was not called");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_CheckExact(data)) Py_RETURN_NONE;
    Py_ssize_t max_key = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_entries = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_layer = PyLong_AsSsize_t(args[3]);
    if ((max_key == -1 || max_entries == -1 || max_layer == -1) && PyErr_Occurred()) return NULL;

    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);
    Py_ssize_t pos = 0;
    uint64_t n, value;

    if (end < 1 || d[0] != 0xa2) Py_RETURN_NONE;
    pos = 1;
    if (!read_key(d, end, &pos, 'e') || !read_head(d, end, &pos, 4, &n) || n > (uint64_t)max_entries)
        Py_RETURN_NONE;

    PyObject *keys = PyList_New(0);
    PyObject *vals = PyList_New(0);
    PyObject *subs = PyList_New(1); /* slot 0 (l) is filled in at the end */
    PyObject *heads = PyList_New(0);
    PyObject *tails = PyList_New(0);
    PyObject *result = NULL;
    PyObject *link = NULL;
    if (keys == NULL || vals == NULL || subs == NULL || heads == NULL || tails == NULL) goto error;
    PyList_SET_ITEM(subs, 0, Py_NewRef(Py_None));

    /* the previous key, as an object (kept in `keys`) and its bytes */
    const unsigned char *prev = NULL;
    Py_ssize_t prev_len = 0;
    int layer = -1;    /* every key's layer (-1: no keys) */
    int linked = 0;    /* whether any subtree link is present */
    for (uint64_t i = 0; i < n; i++) {
        Py_ssize_t start = pos;
        uint64_t slen, p;
        if (pos >= end || d[pos] != 0xa4) goto reject;
        pos++;
        if (!read_key(d, end, &pos, 'k') || !read_head(d, end, &pos, 2, &slen)) goto reject;
        if (slen > (uint64_t)(end - pos)) goto reject;
        const unsigned char *suffix = d + pos;
        pos += (Py_ssize_t)slen;
        if (!read_key(d, end, &pos, 'p') || !read_head(d, end, &pos, 0, &p)) goto reject;
        if (i == 0) {
            if (p != 0) goto reject;
        } else {
            if (p > (uint64_t)prev_len) goto reject;
            /* the shortest compression: the suffix does not repeat the byte the shared prefix stops at */
            if (p < (uint64_t)prev_len && slen > 0 && suffix[0] == prev[p]) goto reject;
        }
        if (p + slen > (uint64_t)max_key) goto reject; /* measured before the key exists */
        if (!read_key(d, end, &pos, 't')) goto reject;
        Py_ssize_t head_end = pos;

        /* the full key: the shared prefix of the previous key, then the suffix */
        Py_ssize_t klen = (Py_ssize_t)(p + slen);
        PyObject *key = PyBytes_FromStringAndSize(NULL, klen);
        if (key == NULL) goto error;
        unsigned char *kb = (unsigned char *)PyBytes_AS_STRING(key);
        if (p) memcpy(kb, prev, (size_t)p);
        if (slen) memcpy(kb + p, suffix, (size_t)slen);
        if (!append_steal(keys, key)) goto error;
        if (i > 0) {
            /* strictly increasing: compare with the previous key */
            Py_ssize_t common = klen < prev_len ? klen : prev_len;
            int c = memcmp(kb, prev, (size_t)common);
            if (c < 0 || (c == 0 && klen <= prev_len)) goto reject;
        }
        if (!key_ok(kb, klen)) goto reject;
        int here = key_layer(kb, klen);
        if (i == 0) {
            layer = here;
        } else if (here != layer) {
            goto reject;
        }
        prev = kb;
        prev_len = klen;

        int got = read_link(d, end, &pos, 1, 0, &link);
        if (got < 0) goto error;
        if (got == 0) goto reject;
        linked |= link != Py_None;
        if (!append_steal(subs, link)) {
            link = NULL;
            goto error;
        }
        link = NULL;
        Py_ssize_t tail_start = pos;
        if (!read_key(d, end, &pos, 'v')) goto reject;
        got = read_link(d, end, &pos, 0, 1, &link);
        if (got < 0) goto error;
        if (got == 0) goto reject;
        if (!append_steal(vals, link)) {
            link = NULL;
            goto error;
        }
        link = NULL;
        if (!append_steal(heads, PyBytes_FromStringAndSize((const char *)d + start, head_end - start)))
            goto error;
        if (!append_steal(tails, PyBytes_FromStringAndSize((const char *)d + tail_start, pos - tail_start)))
            goto error;
    }
    if (!read_key(d, end, &pos, 'l')) goto reject;
    {
        int got = read_link(d, end, &pos, 1, 0, &link);
        if (got < 0) goto error;
        if (got == 0) goto reject;
    }
    if (pos != end) goto reject;
    linked |= link != Py_None;
    if (layer > max_layer || (layer == 0 && linked)) goto reject;
    (void)value;
    PyObject *old = PyList_GET_ITEM(subs, 0);
    PyList_SET_ITEM(subs, 0, link);
    Py_DECREF(old);
    link = NULL;
    {
        PyObject *layer_obj = PyLong_FromLong(layer);
        if (layer_obj == NULL) goto error;
        result = PyTuple_Pack(6, keys, vals, subs, heads, tails, layer_obj);
        Py_DECREF(layer_obj);
    }
    goto done;

reject:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(link);
    Py_XDECREF(keys);
    Py_XDECREF(vals);
    Py_XDECREF(subs);
    Py_XDECREF(heads);
    Py_XDECREF(tails);
    return result;
}

/* Whether the SHA extensions are in use (the portable code is slower than hashlib on long data). */
static int fast_sha(void) {
#ifdef HAVE_SHANI_PATH
    return have_shani;
#else
    return 0;
#endif
}

/*
 * car_blocks(data, pos, max_section) -> {CID: bytes} or None: the block sections
 * of an in-memory CAR from data[pos:] (after its header), every block's
 * SHA-256 checked against its CID. Only the common form is taken: 36-byte
 * dag-cbor or raw sha2-256 CIDs, section lengths in one or two varint bytes,
 * each at most max_section. Anything else, a hash mismatch or a truncated
 * section included, returns None and the caller's general reader decides (it
 * names the error). Duplicate sections keep the last data, as a dict update does.
 */
static PyObject *car_blocks(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "car_blocks(data, pos, max_section)");
        return NULL;
    }
    if (cid_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_mstnode.setup() was not called");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_CheckExact(data)) Py_RETURN_NONE;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_section = PyLong_AsSsize_t(args[2]);
    if ((pos == -1 || max_section == -1) && PyErr_Occurred()) return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);
    if (pos < 0 || pos > end) Py_RETURN_NONE;
    PyObject *held = PyDict_New();
    if (held == NULL) return NULL;
    while (pos < end) {
        Py_ssize_t size;
        unsigned char byte = d[pos];
        if (byte < 0x80) {
            size = byte;
            pos += 1;
        } else if (pos + 1 < end && d[pos + 1] > 0 && d[pos + 1] < 0x80) {
            size = (byte & 0x7F) | ((Py_ssize_t)d[pos + 1] << 7);
            pos += 2;
        } else {
            goto reject;
        }
        Py_ssize_t stop = pos + size;
        Py_ssize_t data_at = pos + 36;
        if (size > max_section || data_at > stop || stop > end) goto reject;
        if (memcmp(d + pos, PFX_DAG_CBOR, 4) != 0 && memcmp(d + pos, PFX_RAW, 4) != 0) goto reject;
        uint32_t h[8];
        sha256(d + data_at, stop - data_at, h);
        for (int i = 0; i < 8; i++) {
            const unsigned char *want = d + pos + 4 + 4 * i;
            uint32_t word = ((uint32_t)want[0] << 24) | ((uint32_t)want[1] << 16) | ((uint32_t)want[2] << 8) | want[3];
            if (word != h[i]) goto reject;
        }
        PyObject *cid = make_cid(d + pos);
        if (cid == NULL) goto error;
        PyObject *block = PyBytes_FromStringAndSize((const char *)d + data_at, stop - data_at);
        if (block == NULL) {
            Py_DECREF(cid);
            goto error;
        }
        int rc = PyDict_SetItem(held, cid, block);
        Py_DECREF(cid);
        Py_DECREF(block);
        if (rc < 0) goto error;
        pos = stop;
    }
    return held;
reject:
    Py_DECREF(held);
    Py_RETURN_NONE;
error:
    Py_DECREF(held);
    return NULL;
}

/* _key_layers(data) -> (portable layer, layer as parse computes it): a test hook for the SHA-256 paths. */
static PyObject *key_layers(PyObject *module, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "_key_layers() takes bytes");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
#ifdef HAVE_SHANI_PATH
    int saved = have_shani;
    have_shani = 0;
    int portable = key_layer(d, n);
    have_shani = saved;
#else
    int portable = key_layer(d, n);
#endif
    return Py_BuildValue("(ii)", portable, key_layer(d, n));
}

/* _digest(data) -> the SHA-256 digest parse uses (a test hook, compared with hashlib). */
static PyObject *digest(PyObject *module, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "_digest() takes bytes");
        return NULL;
    }
    uint32_t h[8];
    unsigned char out[32];
    sha256((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), h);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

/* setup(CID): remember the CID class and where its "raw" slot lives. */
static PyObject *setup(PyObject *module, PyObject *cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "setup() takes the CID class");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *descr = PyDict_GetItemString(type->tp_dict, "raw"); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "the CID class must have a 'raw' slot");
        return NULL;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "the CID class's 'raw' must be a plain slot");
        return NULL;
    }
    if (type->tp_basicsize < (Py_ssize_t)(member->offset + sizeof(PyObject *))) {
        PyErr_SetString(PyExc_TypeError, "the CID class's 'raw' slot is outside the object");
        return NULL;
    }
    Py_XSETREF(cid_type, (PyTypeObject *)Py_NewRef(cls));
    cid_raw_offset = member->offset;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL,
     "parse(data, max_key, max_entries, max_layer) -> (keys, vals, subs, heads, tails, layer) or None"},
    {"setup", setup, METH_O, "setup(CID): the class links are built as"},
    {"car_blocks", (PyCFunction)(void (*)(void))car_blocks, METH_FASTCALL,
     "car_blocks(data, pos, max_section) -> {CID: bytes} or None"},
    {"_key_layers", key_layers, METH_O, "_key_layers(key) -> (portable layer, layer used)"},
    {"_digest", digest, METH_O, "_digest(data) -> SHA-256 as parse computes it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_mstnode", "C fast path for MST node decoding (see node.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mstnode(void) {
    init_key_chars();
    detect_shani();
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    /* 1 when SHA-256 runs on the CPU's SHA extensions (car_blocks is then worth calling) */
    if (PyModule_AddIntConstant(module, "SHA_EXTENSIONS", fast_sha()) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
