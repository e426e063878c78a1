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
 * invert(...) (validate.check_tree_ops' fast path) applies one op's inverse to
 * the tree of a commit's CAR slice: it reads the nodes on the key's path with
 * parse_node (the same proof as parse) and walk.resolve's context checks,
 * changes the bottom node, re-encodes the path canonically and hashes it to
 * the new root CID. Its contract is parse's: a root only when the pure-Python
 * tree would read the same nodes without error and reach that root; None for
 * anything else (merges, splits, an emptied root, any invalid or missing
 * node), and the caller's pure-Python path then decides.
 *
 * Key layers need SHA-256 of every key. Calling back into hashlib per key
 * would cost more than the rest of the parse, so it is computed here
 * (_sha256.h, shared with _carindex): with the x86 SHA extensions when the CPU
 * has them (checked once at import), else a plain FIPS 180-4 implementation. Both are tested against hashlib
 * (_digest, _key_layers: test hooks only).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "_sha256.h"

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

/* A key's layer: leading zero bits of SHA-256(key), counted in pairs (fanout 4). */
static int key_layer(const unsigned char *key, Py_ssize_t n) {
    uint32_t h[8];
    sha256_words(key, (size_t)n, h);
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
 * A link at *pos: 1 and *out set to its 36 CID bytes (NULL for null when
 * `nullable`), 0 when the bytes are not an acceptable link. `raw_ok` also
 * accepts the raw codec (record values may be raw blocks).
 */
static int read_link(const unsigned char *d, Py_ssize_t end, Py_ssize_t *pos, int nullable, int raw_ok,
                     const unsigned char **out) {
    Py_ssize_t p = *pos;
    if (p >= end) return 0;
    if (d[p] == 0xf6) {
        if (!nullable) return 0;
        *out = NULL;
        *pos = p + 1;
        return 1;
    }
    if (p + LINK_BYTES > end || memcmp(d + p, LINK_HEAD, 5) != 0) return 0;
    const unsigned char *raw = d + p + 5;
    if (memcmp(raw, PFX_DAG_CBOR, 4) != 0 && !(raw_ok && memcmp(raw, PFX_RAW, 4) == 0)) return 0;
    *out = raw;
    *pos = p + LINK_BYTES;
    return 1;
}

/*
 * A node taken apart (by parse_node) or rebuilt (by invert). Keys are
 * pointers (into `keybuf`, the caller's key, or another node's buffer); links
 * are pointers to 36 CID bytes or NULL. Entry i sits between subtree slot i
 * and slot i+1; slot 0 is `left`, slot i+1 is `sub[i]`. The per-entry arrays
 * have room for `cap` entries (one more than parsed, for an insertion).
 */
typedef struct {
    Py_ssize_t n;
    Py_ssize_t cap;
    int layer; /* every key's layer; -1 without keys */
    int gone;  /* set by invert: the rebuilt node holds nothing (its slot becomes null) */
    const unsigned char *left;
    const unsigned char **key;
    Py_ssize_t *klen;
    const unsigned char **val;
    const unsigned char **sub;
    Py_ssize_t *span; /* 5 per entry: head start/end, tail start/end in the block (for parse()), key offset */
    unsigned char *keybuf;
    unsigned char cid[36]; /* a rebuilt node's new CID */
} cnode;

static void cnode_free(cnode *nd) {
    PyMem_Free(nd->key);
    PyMem_Free(nd->keybuf);
    memset(nd, 0, sizeof *nd);
}

/* Room for `cap` entries; 0 (MemoryError set) on failure. */
static int cnode_alloc(cnode *nd, Py_ssize_t cap) {
    size_t per = 3 * sizeof(unsigned char *) + 6 * sizeof(Py_ssize_t);
    char *block = PyMem_Malloc((size_t)(cap ? cap : 1) * per);
    if (block == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    nd->cap = cap;
    nd->key = (const unsigned char **)block;
    nd->val = nd->key + cap;
    nd->sub = nd->val + cap;
    nd->klen = (Py_ssize_t *)(nd->sub + cap);
    nd->span = nd->klen + cap;
    return 1;
}

/*
 * Prove data[0:end] a valid canonical node (the rules in the header comment)
 * and fill `nd` (which must be zeroed): 1 valid, 0 not proven here, -1 on a
 * Python error. The caller frees `nd` with cnode_free in every case.
 */
static int parse_node(const unsigned char *d, Py_ssize_t end, Py_ssize_t max_key, Py_ssize_t max_entries,
                      Py_ssize_t max_layer, cnode *nd) {
    Py_ssize_t pos = 0;
    uint64_t n;
    if (end < 1 || d[0] != 0xa2) return 0;
    pos = 1;
    if (!read_key(d, end, &pos, 'e') || !read_head(d, end, &pos, 4, &n) || n > (uint64_t)max_entries) return 0;
    /* every entry takes bytes: a count beyond what is left is refused before anything is allocated */
    if (n > (uint64_t)(end - pos)) return 0;
    if (!cnode_alloc(nd, (Py_ssize_t)n + 1)) return -1;
    /* keys are rebuilt back to back; offsets until the buffer stops growing */
    Py_ssize_t used = 0, room = 0;
    Py_ssize_t prev_off = 0, prev_len = 0;
    int layer = -1;
    int linked = 0;
    for (uint64_t i = 0; i < n; i++) {
        Py_ssize_t start = pos;
        uint64_t slen, p;
        if (pos >= end || d[pos] != 0xa4) return 0;
        pos++;
        if (!read_key(d, end, &pos, 'k') || !read_head(d, end, &pos, 2, &slen)) return 0;
        if (slen > (uint64_t)(end - pos)) return 0;
        const unsigned char *suffix = d + pos;
        pos += (Py_ssize_t)slen;
        if (!read_key(d, end, &pos, 'p') || !read_head(d, end, &pos, 0, &p)) return 0;
        if (i == 0) {
            if (p != 0) return 0;
        } else {
            if (p > (uint64_t)prev_len) return 0;
            /* the shortest compression: the suffix does not repeat the byte the shared prefix stops at */
            if (p < (uint64_t)prev_len && slen > 0 && suffix[0] == nd->keybuf[prev_off + (Py_ssize_t)p]) return 0;
        }
        if (p + slen > (uint64_t)max_key) return 0; /* measured before the key exists */
        if (!read_key(d, end, &pos, 't')) return 0;
        Py_ssize_t head_end = pos;

        /* the full key: the shared prefix of the previous key, then the suffix */
        Py_ssize_t klen = (Py_ssize_t)(p + slen);
        if (used + klen > room) {
            Py_ssize_t want = room ? room * 2 : 256;
            while (want < used + klen) want *= 2;
            unsigned char *grown = PyMem_Realloc(nd->keybuf, (size_t)want);
            if (grown == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            nd->keybuf = grown;
            room = want;
        }
        unsigned char *kb = nd->keybuf + used;
        if (p) memcpy(kb, nd->keybuf + prev_off, (size_t)p);
        if (slen) memcpy(kb + p, suffix, (size_t)slen);
        if (i > 0) {
            /* strictly increasing: compare with the previous key */
            const unsigned char *prev = nd->keybuf + prev_off;
            Py_ssize_t common = klen < prev_len ? klen : prev_len;
            int c = memcmp(kb, prev, (size_t)common);
            if (c < 0 || (c == 0 && klen <= prev_len)) return 0;
        }
        if (!key_ok(kb, klen)) return 0;
        int here = key_layer(kb, klen);
        if (i == 0) {
            layer = here;
        } else if (here != layer) {
            return 0;
        }
        nd->klen[i] = klen;
        nd->span[5 * i + 4] = used; /* the key's offset: pointers once the buffer stops moving */
        prev_off = used;
        prev_len = klen;
        used += klen;

        const unsigned char *link;
        if (!read_link(d, end, &pos, 1, 0, &link)) return 0;
        linked |= link != NULL;
        nd->sub[i] = link;
        Py_ssize_t tail_start = pos;
        if (!read_key(d, end, &pos, 'v')) return 0;
        if (!read_link(d, end, &pos, 0, 1, &link)) return 0;
        nd->val[i] = link;
        nd->span[5 * i] = start;
        nd->span[5 * i + 1] = head_end;
        nd->span[5 * i + 2] = tail_start;
        nd->span[5 * i + 3] = pos;
        nd->n = (Py_ssize_t)i + 1;
    }
    const unsigned char *left;
    if (!read_key(d, end, &pos, 'l') || !read_link(d, end, &pos, 1, 0, &left)) return 0;
    if (pos != end) return 0;
    linked |= left != NULL;
    if (layer > max_layer || (layer == 0 && linked)) return 0;
    nd->left = left;
    nd->layer = layer;
    for (Py_ssize_t i = 0; i < nd->n; i++) nd->key[i] = nd->keybuf + nd->span[5 * i + 4];
    return 1;
}

/* Whether setup() gave the module its CID class; else a RuntimeError is set (callers return NULL). */
static int set_up(void) {
    if (cid_type != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "_mstnode.setup() was not called");
    return 0;
}

/* A CID object for 36 bytes, or None for NULL (a new reference). */
static PyObject *link_object(const unsigned char *raw) {
    return raw == NULL ? Py_NewRef(Py_None) : make_cid(raw);
}

static PyObject *parse(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse(data, max_key, max_entries, max_layer)");
        return NULL;
    }
    if (!set_up()) return NULL;
    PyObject *data = args[0];
    if (!PyBytes_CheckExact(data)) Py_RETURN_NONE;
    Py_ssize_t max_key = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_entries = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_layer = PyLong_AsSsize_t(args[3]);
    if ((max_key == -1 || max_entries == -1 || max_layer == -1) && PyErr_Occurred()) return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    cnode nd;
    memset(&nd, 0, sizeof nd);
    int rc = parse_node(d, PyBytes_GET_SIZE(data), max_key, max_entries, max_layer, &nd);
    if (rc <= 0) {
        cnode_free(&nd);
        if (rc < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *result = NULL, *layer_obj = NULL;
    PyObject *keys = PyList_New(nd.n);
    PyObject *vals = PyList_New(nd.n);
    PyObject *subs = PyList_New(nd.n + 1);
    PyObject *heads = PyList_New(nd.n);
    PyObject *tails = PyList_New(nd.n);
    if (keys == NULL || vals == NULL || subs == NULL || heads == NULL || tails == NULL) goto done;
    PyObject *item = link_object(nd.left);
    if (item == NULL) goto done;
    PyList_SET_ITEM(subs, 0, item);
    for (Py_ssize_t i = 0; i < nd.n; i++) {
        const Py_ssize_t *span = nd.span + 5 * i;
        if ((item = PyBytes_FromStringAndSize((const char *)nd.key[i], nd.klen[i])) == NULL) goto done;
        PyList_SET_ITEM(keys, i, item);
        if ((item = make_cid(nd.val[i])) == NULL) goto done;
        PyList_SET_ITEM(vals, i, item);
        if ((item = link_object(nd.sub[i])) == NULL) goto done;
        PyList_SET_ITEM(subs, i + 1, item);
        if ((item = PyBytes_FromStringAndSize((const char *)d + span[0], span[1] - span[0])) == NULL) goto done;
        PyList_SET_ITEM(heads, i, item);
        if ((item = PyBytes_FromStringAndSize((const char *)d + span[2], span[3] - span[2])) == NULL) goto done;
        PyList_SET_ITEM(tails, i, item);
    }
    if ((layer_obj = PyLong_FromLong(nd.layer)) == NULL) goto done;
    result = PyTuple_Pack(6, keys, vals, subs, heads, tails, layer_obj);
done:
    cnode_free(&nd);
    Py_XDECREF(layer_obj);
    Py_XDECREF(keys);
    Py_XDECREF(vals);
    Py_XDECREF(subs);
    Py_XDECREF(heads);
    Py_XDECREF(tails);
    return result;
}

/* --- inversion of one op (validate.check_tree_ops' fast path) ------------------------------- */

/* Bytes compare of two keys: <0, 0, >0. */
static int key_cmp(const unsigned char *a, Py_ssize_t alen, const unsigned char *b, Py_ssize_t blen) {
    Py_ssize_t common = alen < blen ? alen : blen;
    int c = memcmp(a, b, (size_t)common);
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

/* bisect_left: how many keys of the node are below `key`. */
static Py_ssize_t bisect(const cnode *nd, const unsigned char *key, Py_ssize_t klen) {
    Py_ssize_t lo = 0, hi = nd->n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (key_cmp(nd->key[mid], nd->klen[mid], key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const unsigned char **slot_of(cnode *nd, Py_ssize_t i) { return i == 0 ? &nd->left : &nd->sub[i - 1]; }

/*
 * Read the node `raw` names from `blocks` (a dict of CID -> bytes) into `nd`:
 * 1 done, 0 not proven (missing, not bytes, too big, not a valid node), -1 on
 * a Python error. `hold` keeps the block alive (the caller releases it).
 */
static int load_node(PyObject *blocks, const unsigned char *raw, Py_ssize_t max_bytes, Py_ssize_t max_key,
                     Py_ssize_t max_entries, Py_ssize_t max_layer, cnode *nd, PyObject **hold) {
    PyObject *cid = make_cid(raw);
    if (cid == NULL) return -1;
    PyObject *data = PyDict_GetItemWithError(blocks, cid); /* borrowed */
    Py_DECREF(cid);
    if (data == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyBytes_CheckExact(data)) return 0;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size <= 0 || size > max_bytes) return 0;
    *hold = Py_NewRef(data);
    return parse_node((const unsigned char *)PyBytes_AS_STRING(data), size, max_key, max_entries, max_layer, nd);
}

/* A CBOR head of major type `major` for `value` at out; its length. */
static Py_ssize_t put_head(unsigned char *out, int major, uint64_t value) {
    unsigned char m = (unsigned char)(major << 5);
    if (value < 24) {
        out[0] = m | (unsigned char)value;
        return 1;
    }
    if (value < 0x100) {
        out[0] = m | 24;
        out[1] = (unsigned char)value;
        return 2;
    }
    if (value < 0x10000) {
        out[0] = m | 25;
        out[1] = (unsigned char)(value >> 8);
        out[2] = (unsigned char)value;
        return 3;
    }
    out[0] = m | 26;
    out[1] = (unsigned char)(value >> 24);
    out[2] = (unsigned char)(value >> 16);
    out[3] = (unsigned char)(value >> 8);
    out[4] = (unsigned char)value;
    return 5;
}

static Py_ssize_t put_link(unsigned char *out, const unsigned char *raw) {
    if (raw == NULL) {
        out[0] = 0xf6;
        return 1;
    }
    memcpy(out, LINK_HEAD, 5);
    memcpy(out + 5, raw, 36);
    return LINK_BYTES;
}

/* Encode `nd` canonically and set nd->cid to its dag-cbor sha2-256 CID; 0 (MemoryError) on failure. */
static int seal_node(cnode *nd) {
    /* the map head, "e" and its array head, "l" and its link; per entry at most 19 bytes of heads
       and field names, the key suffix and two links */
    size_t size = 3 + 5 + 2 + LINK_BYTES;
    for (Py_ssize_t i = 0; i < nd->n; i++) size += (size_t)nd->klen[i] + 19 + 2 * LINK_BYTES;
    unsigned char *buf = PyMem_Malloc(size);
    if (buf == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    Py_ssize_t at = 0;
    buf[at++] = 0xa2;
    buf[at++] = 0x61;
    buf[at++] = 'e';
    at += put_head(buf + at, 4, (uint64_t)nd->n);
    const unsigned char *prev = NULL;
    Py_ssize_t prev_len = 0;
    for (Py_ssize_t i = 0; i < nd->n; i++) {
        const unsigned char *key = nd->key[i];
        Py_ssize_t klen = nd->klen[i], p = 0;
        if (prev != NULL) {
            Py_ssize_t common = klen < prev_len ? klen : prev_len;
            while (p < common && key[p] == prev[p]) p++;
        }
        buf[at++] = 0xa4;
        buf[at++] = 0x61;
        buf[at++] = 'k';
        at += put_head(buf + at, 2, (uint64_t)(klen - p));
        memcpy(buf + at, key + p, (size_t)(klen - p));
        at += klen - p;
        buf[at++] = 0x61;
        buf[at++] = 'p';
        at += put_head(buf + at, 0, (uint64_t)p);
        buf[at++] = 0x61;
        buf[at++] = 't';
        at += put_link(buf + at, nd->sub[i]);
        buf[at++] = 0x61;
        buf[at++] = 'v';
        at += put_link(buf + at, nd->val[i]);
        prev = key;
        prev_len = klen;
    }
    buf[at++] = 0x61;
    buf[at++] = 'l';
    at += put_link(buf + at, nd->left);
    assert((size_t)at <= size);
    uint32_t h[8];
    sha256_words(buf, (size_t)at, h);
    PyMem_Free(buf);
    memcpy(nd->cid, PFX_DAG_CBOR, 4);
    for (int i = 0; i < 8; i++) {
        nd->cid[4 + 4 * i] = (unsigned char)(h[i] >> 24);
        nd->cid[5 + 4 * i] = (unsigned char)(h[i] >> 16);
        nd->cid[6 + 4 * i] = (unsigned char)(h[i] >> 8);
        nd->cid[7 + 4 * i] = (unsigned char)h[i];
    }
    return 1;
}

/* The 36 bytes of a CID object whose raw form is a 36-byte sha2-256 CID of `codecs` (1 dag-cbor, 2 also raw). */
static const unsigned char *cid_raw36(PyObject *obj, int raw_ok) {
    if (Py_TYPE(obj) != cid_type) return NULL;
    PyObject *raw = *(PyObject **)((char *)obj + cid_raw_offset);
    if (raw == NULL || !PyBytes_CheckExact(raw) || PyBytes_GET_SIZE(raw) != 36) return NULL;
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(raw);
    if (memcmp(r, PFX_DAG_CBOR, 4) != 0 && !(raw_ok && memcmp(r, PFX_RAW, 4) == 0)) return NULL;
    return r;
}

#define MAX_PATH 40

/*
 * invert(blocks, root, key, cur, new, max_bytes, max_key, max_entries, max_layer)
 *   -> 36-byte root CID of the inverted tree, or None
 *
 * The one-op case of validate.check_tree_ops, for a tree read from `blocks`
 * (a dict of CID -> bytes whose hashes were checked): the tree at `root`
 * must map `key` to `cur` (None: absent), and the result is the root of that
 * tree with `key` set to `new` (None: deleted). It reads exactly the nodes the
 * pure-Python path reads and checks each as it does (parse_node, and the
 * layer, bounds and entry-less rules of walk.resolve), and answers None
 * ("not proven here") for anything else: a missing or invalid block, a
 * forward mismatch, an entry-less or vanishing root, a key above the root's
 * layer, a deletion that would merge two subtrees or an insertion that would
 * split one (those read more nodes), a full node, CIDs of other forms. The
 * caller then runs the pure-Python path, which decides and names any error.
 */
static PyObject *invert(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "invert(blocks, root, key, cur, new, max_bytes, max_key, max_entries, max_layer)");
        return NULL;
    }
    if (!set_up()) return NULL;
    PyObject *blocks = args[0];
    if (!PyDict_CheckExact(blocks) || !PyBytes_CheckExact(args[2])) Py_RETURN_NONE;
    Py_ssize_t lim[4];
    for (int i = 0; i < 4; i++) {
        lim[i] = PyLong_AsSsize_t(args[5 + i]);
        if (lim[i] == -1 && PyErr_Occurred()) return NULL;
    }
    Py_ssize_t max_bytes = lim[0], max_key = lim[1], max_entries = lim[2], max_layer = lim[3];
    const unsigned char *root = cid_raw36(args[1], 0);
    const unsigned char *cur = args[3] == Py_None ? NULL : cid_raw36(args[3], 1);
    const unsigned char *new = args[4] == Py_None ? NULL : cid_raw36(args[4], 1);
    const unsigned char *key = (const unsigned char *)PyBytes_AS_STRING(args[2]);
    Py_ssize_t klen = PyBytes_GET_SIZE(args[2]);
    if (root == NULL || (args[3] != Py_None && cur == NULL) || (args[4] != Py_None && new == NULL) ||
        (cur == NULL && new == NULL) || klen > max_key || !key_ok(key, klen) || max_layer >= MAX_PATH - 2)
        Py_RETURN_NONE;
    int height = key_layer(key, klen);
    if (height > max_layer) Py_RETURN_NONE;

    cnode path[MAX_PATH];
    PyObject *hold[MAX_PATH];
    Py_ssize_t idx[MAX_PATH];
    memset(path, 0, sizeof path);
    memset(hold, 0, sizeof hold);
    PyObject *result = NULL;
    int rc;

    /* --- the forward read: MST.load, then get(key) down to the key's layer */
    rc = load_node(blocks, root, max_bytes, max_key, max_entries, max_layer, &path[0], &hold[0]);
    if (rc <= 0) goto out;
    if (path[0].n == 0) goto reject; /* the empty tree or an untrimmed root: the Python path */
    int layer = path[0].layer;
    if (height > layer) goto reject; /* get() finds nothing; an insertion would split the root */
    const unsigned char *lo = NULL, *hi = NULL;
    Py_ssize_t lo_len = 0, hi_len = 0;
    int depth = 0, found = 0, stopped_empty = 0;
    for (;;) {
        cnode *nd = &path[depth];
        Py_ssize_t i = bisect(nd, key, klen);
        idx[depth] = i;
        if (layer == height) {
            found = i < nd->n && key_cmp(nd->key[i], nd->klen[i], key, klen) == 0;
            break;
        }
        const unsigned char *child = *slot_of(nd, i);
        if (i) {
            lo = nd->key[i - 1];
            lo_len = nd->klen[i - 1];
        }
        if (i < nd->n) {
            hi = nd->key[i];
            hi_len = nd->klen[i];
        }
        if (child == NULL) {
            stopped_empty = 1;
            break;
        }
        depth++;
        rc = load_node(blocks, child, max_bytes, max_key, max_entries, max_layer, &path[depth], &hold[depth]);
        if (rc <= 0) goto out;
        layer--;
        cnode *below = &path[depth];
        /* walk.resolve's checks of a node against the slot it fills */
        if (below->n) {
            if (below->layer != layer) goto reject;
            if (lo != NULL && key_cmp(below->key[0], below->klen[0], lo, lo_len) <= 0) goto reject;
            if (hi != NULL && key_cmp(below->key[below->n - 1], below->klen[below->n - 1], hi, hi_len) >= 0)
                goto reject;
        } else if (layer <= 0 || below->left == NULL) {
            goto reject;
        }
    }
    cnode *at = &path[depth];
    Py_ssize_t i = idx[depth];
    if (cur != NULL) {
        if (!found || memcmp(at->val[i], cur, 36) != 0) goto reject;
    } else if (found) {
        goto reject;
    }

    /* --- the inverse op on the path's bottom node (or below it, for a new key's chain) */
    int bottom = depth; /* the deepest node that changed or was made */
    if (new != NULL && found) { /* an update: set the old value back */
        if (memcmp(at->val[i], new, 36) == 0) {
            result = PyBytes_FromStringAndSize((const char *)root, 36); /* nothing changes */
            goto out;
        }
        at->val[i] = new;
    } else if (new == NULL) { /* a create: delete the key */
        const unsigned char *left = *slot_of(at, i), *right = at->sub[i];
        if (left != NULL && right != NULL) goto reject; /* the Python path merges the two subtrees */
        const unsigned char *merged = left != NULL ? left : right;
        if (at->n > 1) {
            for (Py_ssize_t j = i; j + 1 < at->n; j++) {
                at->key[j] = at->key[j + 1];
                at->klen[j] = at->klen[j + 1];
                at->val[j] = at->val[j + 1];
                at->sub[j] = at->sub[j + 1];
            }
            at->n--;
            *slot_of(at, i) = merged;
        } else {
            at->n = 0;
            at->left = merged;
            at->gone = merged == NULL;
        }
    } else if (!stopped_empty) { /* a delete: insert the key into the node of its layer */
        if (at->n >= max_entries || *slot_of(at, i) != NULL) goto reject; /* full, or a split */
        for (Py_ssize_t j = at->n; j > i; j--) {
            at->key[j] = at->key[j - 1];
            at->klen[j] = at->klen[j - 1];
            at->val[j] = at->val[j - 1];
            at->sub[j] = at->sub[j - 1];
        }
        at->key[i] = key;
        at->klen[i] = klen;
        at->val[i] = new;
        at->sub[i] = NULL;
        at->n++;
    } else { /* a delete whose path ends at an empty slot: a new node, under entry-less ones down to it */
        int made = layer - height; /* layers layer-1 .. height */
        if (depth + made >= MAX_PATH) goto reject;
        for (int k = 1; k <= made; k++) {
            cnode *nd = &path[depth + k];
            if (!cnode_alloc(nd, 1)) goto out;
            idx[depth + k] = 0;
            if (k == made) {
                nd->n = 1;
                nd->key[0] = key;
                nd->klen[0] = klen;
                nd->val[0] = new;
                nd->sub[0] = NULL;
                nd->left = NULL;
            } else {
                nd->n = 0; /* its left link is set below, once the node under it is sealed */
            }
        }
        bottom = depth + made;
    }

    /* --- seal bottom-up: each changed node's new CID goes into its parent's slot */
    for (int d = bottom; d >= 0; d--) {
        cnode *nd = &path[d];
        if (d < bottom) {
            cnode *child = &path[d + 1];
            const unsigned char *link = child->gone ? NULL : child->cid;
            *slot_of(nd, idx[d]) = link;
            if (nd->n == 0 && link == NULL) nd->gone = 1; /* an entry-less node left without its subtree */
        }
        if (!nd->gone && !seal_node(nd)) goto out;
    }
    if (path[0].gone || path[0].n == 0) goto reject; /* the tree empties or its root must be trimmed */
    result = PyBytes_FromStringAndSize((const char *)path[0].cid, 36);
    goto out;

reject:
    result = Py_NewRef(Py_None);
out:
    for (int d = 0; d < MAX_PATH; d++) {
        cnode_free(&path[d]);
        Py_XDECREF(hold[d]);
    }
    if (result == NULL && !PyErr_Occurred()) result = Py_NewRef(Py_None); /* rc == 0: not proven */
    return result;
}

/* Whether the SHA extensions are in use (the portable code is slower than hashlib on long data). */
static int fast_sha(void) {
#ifdef SHA256_HAVE_SHANI
    return sha256_have_shani;
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
    if (!set_up()) return NULL;
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
        sha256_words(d + data_at, (size_t)(stop - data_at), h);
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

/*
 * export_chunk(stack, nodes, read, records, max_blocks, max_bytes) -> (bytes, count, state):
 * the next CAR sections of a stored repository's export in pre-order (host/sync_api.py's
 * _stored_pre_order, the same walk). Why here: a 100k-record getRepo is one block
 * after another of small Python steps (pop, compare, varint, join), and this loop
 * does them on bytes.
 *
 * `stack` is the walk's list of (binary CID, is_node) with the top last; `nodes` the
 * child nodes read ahead ({CID bytes: data}); read(cids) yields (cid, data) rows for
 * at most 256 CIDs, and may yield more nodes than asked (all go into `nodes`; a child
 * already there is not asked for again); `records` yields (cid, data) rows in the
 * tree's key order. A node is only taken apart to find its links (the store checked
 * it when it was written): the canonical layout or nothing. Sections are added until `max_blocks`
 * blocks or `max_bytes` bytes are in the chunk. state: 0 the walk is over, 1 call
 * again, 2 the walk is handed back: the block on top of the stack (still there) is
 * a record whose row does not match (the records iterator is then spent: that row
 * was read), a node not read ahead, or a node not in the layout taken here. The
 * caller goes on in Python, which reads by CID and names any error.
 */
#define WALK_PREFETCH 256

typedef struct {
    unsigned char *buf;
    Py_ssize_t len, cap;
} wbuf;

static int wbuf_section(wbuf *w, const char *cid, Py_ssize_t clen, const char *data, Py_ssize_t dlen) {
    Py_ssize_t n = clen + dlen;
    Py_ssize_t need = w->len + n + 10;
    if (need > w->cap) {
        Py_ssize_t want = w->cap ? w->cap * 2 : 1 << 17;
        while (want < need) want *= 2;
        unsigned char *grown = PyMem_Realloc(w->buf, (size_t)want);
        if (grown == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        w->buf = grown;
        w->cap = want;
    }
    uint64_t v = (uint64_t)n;
    while (v >= 0x80) {
        w->buf[w->len++] = (unsigned char)(v & 0x7F) | 0x80;
        v >>= 7;
    }
    w->buf[w->len++] = (unsigned char)v;
    memcpy(w->buf + w->len, cid, (size_t)clen);
    w->len += clen;
    memcpy(w->buf + w->len, data, (size_t)dlen);
    w->len += dlen;
    return 1;
}

/*
 * The links of a canonical node: *left (or NULL), and per entry its value and
 * subtree (or NULL) into vals/subs (room for `room` entries). Returns the entry
 * count, -1 when the bytes are not that layout, -2 when there are more than `room`.
 */
static Py_ssize_t node_links(const unsigned char *d, Py_ssize_t end, const unsigned char **left,
                             const unsigned char **vals, const unsigned char **subs, Py_ssize_t room) {
    Py_ssize_t pos = 1;
    uint64_t n;
    if (end < 1 || d[0] != 0xa2) return -1;
    if (!read_key(d, end, &pos, 'e') || !read_head(d, end, &pos, 4, &n)) return -1;
    if (n > (uint64_t)(end - pos)) return -1;
    if (n > (uint64_t)room) return -2;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t slen, p;
        if (pos >= end || d[pos] != 0xa4) return -1;
        pos++;
        if (!read_key(d, end, &pos, 'k') || !read_head(d, end, &pos, 2, &slen)) return -1;
        if (slen > (uint64_t)(end - pos)) return -1;
        pos += (Py_ssize_t)slen;
        if (!read_key(d, end, &pos, 'p') || !read_head(d, end, &pos, 0, &p)) return -1;
        if (!read_key(d, end, &pos, 't') || !read_link(d, end, &pos, 1, 0, &subs[i])) return -1;
        if (!read_key(d, end, &pos, 'v') || !read_link(d, end, &pos, 0, 1, &vals[i])) return -1;
    }
    if (!read_key(d, end, &pos, 'l') || !read_link(d, end, &pos, 1, 0, left)) return -1;
    return pos == end ? (Py_ssize_t)n : -1;
}

/* Push (36 CID bytes, is_node) on the stack; 0 on a Python error. */
static int walk_push(PyObject *stack, const unsigned char *raw, int is_node) {
    PyObject *cid = PyBytes_FromStringAndSize((const char *)raw, 36);
    if (cid == NULL) return 0;
    PyObject *item = PyTuple_Pack(2, cid, is_node ? Py_True : Py_False);
    Py_DECREF(cid);
    if (item == NULL) return 0;
    int rc = PyList_Append(stack, item);
    Py_DECREF(item);
    return rc == 0;
}

/* nodes.update(read(batch)): every row read() yields, asked for or read ahead; 0 on a Python error. */
static int walk_read(PyObject *read, PyObject *nodes, PyObject *batch) {
    PyObject *rows = PyObject_CallOneArg(read, batch);
    if (rows == NULL) return 0;
    PyObject *it = PyObject_GetIter(rows);
    Py_DECREF(rows);
    if (it == NULL) return 0;
    PyObject *row;
    while ((row = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 2) {
            Py_DECREF(row);
            Py_DECREF(it);
            PyErr_SetString(PyExc_TypeError, "read() must yield (cid, data) pairs");
            return 0;
        }
        int rc = PyDict_SetItem(nodes, PyTuple_GET_ITEM(row, 0), PyTuple_GET_ITEM(row, 1));
        Py_DECREF(row);
        if (rc < 0) {
            Py_DECREF(it);
            return 0;
        }
    }
    Py_DECREF(it);
    return !PyErr_Occurred();
}

static PyObject *export_chunk(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "export_chunk(stack, nodes, read, records, max_blocks, max_bytes)");
        return NULL;
    }
    PyObject *stack = args[0], *nodes = args[1], *read = args[2], *records = args[3];
    if (!PyList_CheckExact(stack) || !PyDict_CheckExact(nodes)) {
        PyErr_SetString(PyExc_TypeError, "export_chunk: stack must be a list and nodes a dict");
        return NULL;
    }
    Py_ssize_t max_blocks = PyLong_AsSsize_t(args[4]);
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[5]);
    if ((max_blocks == -1 || max_bytes == -1) && PyErr_Occurred()) return NULL;
    wbuf w = {NULL, 0, 0};
    Py_ssize_t room = 0, count = 0;
    const unsigned char **links = NULL; /* vals then subs, `room` each */
    int state = 1;
    PyObject *result = NULL;
    while (count < max_blocks && w.len < max_bytes) {
        Py_ssize_t depth = PyList_GET_SIZE(stack);
        if (depth == 0) {
            state = 0;
            break;
        }
        PyObject *top = PyList_GET_ITEM(stack, depth - 1); /* borrowed until popped */
        if (!PyTuple_Check(top) || PyTuple_GET_SIZE(top) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(top, 0))) {
            PyErr_SetString(PyExc_TypeError, "export_chunk: stack items must be (bytes, bool)");
            goto done;
        }
        PyObject *cid = PyTuple_GET_ITEM(top, 0);
        int is_node = PyObject_IsTrue(PyTuple_GET_ITEM(top, 1));
        if (is_node < 0) goto done;
        if (!is_node) {
            if (records == Py_None) {
                state = 2;
                break;
            }
            PyObject *row = PyIter_Next(records);
            if (row == NULL) {
                if (PyErr_Occurred()) goto done;
                state = 2;
                break;
            }
            PyObject *rcid = PyTuple_Check(row) && PyTuple_GET_SIZE(row) == 2 ? PyTuple_GET_ITEM(row, 0) : NULL;
            PyObject *rdata = rcid ? PyTuple_GET_ITEM(row, 1) : NULL;
            if (rcid == NULL || !PyBytes_Check(rcid) || !PyBytes_Check(rdata) ||
                PyBytes_GET_SIZE(rcid) != PyBytes_GET_SIZE(cid) ||
                memcmp(PyBytes_AS_STRING(rcid), PyBytes_AS_STRING(cid), (size_t)PyBytes_GET_SIZE(cid)) != 0) {
                Py_DECREF(row);
                state = 2;
                break;
            }
            int ok = wbuf_section(&w, PyBytes_AS_STRING(rcid), PyBytes_GET_SIZE(rcid), PyBytes_AS_STRING(rdata),
                                  PyBytes_GET_SIZE(rdata));
            Py_DECREF(row);
            if (!ok) goto done;
            if (PyList_SetSlice(stack, depth - 1, depth, NULL) < 0) goto done;
            count++;
            continue;
        }
        PyObject *data = PyDict_GetItemWithError(nodes, cid); /* borrowed */
        if (data == NULL) {
            if (PyErr_Occurred()) goto done;
            state = 2;
            break;
        }
        if (!PyBytes_Check(data)) {
            state = 2;
            break;
        }
        Py_INCREF(data);
        Py_INCREF(cid);
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
        Py_ssize_t end = PyBytes_GET_SIZE(data);
        const unsigned char *left;
        Py_ssize_t n;
        for (;;) {
            n = links ? node_links(d, end, &left, links, links + room, room) : -2;
            if (n != -2) break;
            Py_ssize_t want = room ? room * 2 : 64;
            while (want < end) want *= 2; /* an entry takes bytes: never more entries than that */
            const unsigned char **grown = PyMem_Realloc(links, (size_t)want * 2 * sizeof *links);
            if (grown == NULL) {
                PyErr_NoMemory();
                Py_DECREF(data);
                Py_DECREF(cid);
                goto done;
            }
            links = grown;
            room = want;
        }
        if (n < 0) { /* not the layout taken here: Python decodes it and names what is wrong */
            Py_DECREF(data);
            Py_DECREF(cid);
            state = 2;
            break;
        }
        const unsigned char **vals = links, **subs = links + room;
        int ok = wbuf_section(&w, PyBytes_AS_STRING(cid), PyBytes_GET_SIZE(cid), (const char *)d, end) &&
                 PyDict_DelItem(nodes, cid) == 0 && PyList_SetSlice(stack, depth - 1, depth, NULL) == 0;
        if (ok) {
            /* the child nodes, read ahead in runs of WALK_PREFETCH: left, then each entry's subtree */
            PyObject *batch = PyList_New(0);
            ok = batch != NULL;
            for (Py_ssize_t i = -1; ok && i < n; i++) {
                const unsigned char *sub = i < 0 ? left : subs[i];
                if (sub == NULL) continue;
                PyObject *b = PyBytes_FromStringAndSize((const char *)sub, 36);
                int held = b == NULL ? -1 : PyDict_Contains(nodes, b); /* read ahead by an earlier read */
                ok = held == 1 || (held == 0 && PyList_Append(batch, b) == 0);
                Py_XDECREF(b);
                if (ok && PyList_GET_SIZE(batch) == WALK_PREFETCH) {
                    ok = walk_read(read, nodes, batch) && PyList_SetSlice(batch, 0, WALK_PREFETCH, NULL) == 0;
                }
            }
            if (ok && PyList_GET_SIZE(batch) > 0) ok = walk_read(read, nodes, batch);
            Py_XDECREF(batch);
            /* the children on the stack, last first: each entry's subtree and value, then left */
            for (Py_ssize_t i = n - 1; ok && i >= 0; i--) {
                if (subs[i] != NULL) ok = walk_push(stack, subs[i], 1);
                if (ok) ok = walk_push(stack, vals[i], 0);
            }
            if (ok && left != NULL) ok = walk_push(stack, left, 1);
        }
        Py_DECREF(data);
        Py_DECREF(cid);
        if (!ok) goto done;
        count++;
    }
    {
        PyObject *piece = PyBytes_FromStringAndSize((const char *)w.buf, w.len);
        if (piece != NULL) result = Py_BuildValue("(Nni)", piece, count, state);
    }
done:
    PyMem_Free(w.buf);
    PyMem_Free(links);
    return result;
}

/* _key_layers(data) -> (portable layer, layer as parse computes it): a test hook for the SHA-256 paths. */
static PyObject *key_layers(PyObject *module, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "_key_layers() takes bytes");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
#ifdef SHA256_HAVE_SHANI
    int saved = sha256_have_shani;
    sha256_have_shani = 0;
    int portable = key_layer(d, n);
    sha256_have_shani = saved;
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
    unsigned char out[32];
    sha256_digest((const unsigned char *)PyBytes_AS_STRING(arg), (size_t)PyBytes_GET_SIZE(arg), out);
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
    {"invert", (PyCFunction)(void (*)(void))invert, METH_FASTCALL,
     "invert(blocks, root, key, cur, new, max_bytes, max_key, max_entries, max_layer) -> root CID bytes or None"},
    {"setup", setup, METH_O, "setup(CID): the class links are built as"},
    {"car_blocks", (PyCFunction)(void (*)(void))car_blocks, METH_FASTCALL,
     "car_blocks(data, pos, max_section) -> {CID: bytes} or None"},
    {"export_chunk", (PyCFunction)(void (*)(void))export_chunk, METH_FASTCALL,
     "export_chunk(stack, nodes, read, records, max_blocks, max_bytes) -> (bytes, count, state)"},
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
    sha256_detect();
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    /* 1 when SHA-256 runs on the CPU's SHA extensions (car_blocks is then worth calling) */
    if (PyModule_AddIntConstant(module, "SHA_EXTENSIONS", fast_sha()) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
