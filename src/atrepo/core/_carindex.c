/*
 * Optional C fast path for indexing a CAR file (atrepo.core.car.CarIndex).
 *
 * Why: verifying a repository CAR whose blocks are not in the streamable
 * pre-order (the reference host's export, a store iterating by CID) needs an
 * index of every block before the tree can be walked. In pure Python that
 * costs a slice, a hashlib call and a probe loop per block, about half of
 * the whole verification; here each block is a few hundred nanoseconds with
 * no Python object at all.
 *
 * What it holds (a Table): block i, in file order with duplicate sections
 * skipped, has its 36-byte CID at cids[36*i], its data's offset and length
 * packed in where[i] (offset << 22 | length), and, when the block was kept in
 * memory, its position + 1 in the kept buffer at kept_at[i]. Lookup is linear
 * probing over slots, at most half full, keyed by the first 8 digest bytes
 * mixed with a per-process seed (digests of blocks we index are SHA-256
 * outputs, and the seed keeps a file from steering its blocks into one probe
 * run). A slot (32 bits) holds ordinal + 1 (0: empty; ORDINAL_BITS, so at
 * most MAX_ORDINALS blocks) under 9 more digest bits, so a probe nearly
 * always reads the CID array only for the block it is after: in a file in any
 * order each read there is a cache miss, and so is each slot, which scan()
 * prefetches before it hashes the block. One bit a block says whether the
 * walk used it.
 *
 * Contract of scan(): it indexes the sections it can prove well formed
 * (minimal length varint, a CIDv1 with a one-byte codec and a 32-byte
 * sha2-256 digest, data that hashes to it, within the limits) and stops at
 * the first section it cannot: it returns (pos, -1) and the Python caller
 * handles that one section (an odd CID, or the located error it raises), as
 * the pure-Python index would. So this module never has to name an error.
 * A section cut off by the end of the buffer returns (pos, bytes missing),
 * the contract of car._parse_sections.
 *
 * raw_sections() is the same proof for the streaming reader of pre-order
 * files (car.parse_raw_sections): it hands out (binary CID, data) pairs for
 * the common sections and every other section back to Python, likewise.
 *
 * SHA-256 (_sha256.h, shared with _mstnode) uses the x86 SHA extensions when
 * the CPU has them (checked once at import), else a plain FIPS 180-4
 * implementation; both are tested against hashlib through _digest (a test
 * hook).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_sha256.h"

#define ENTRY 36
#define LENGTH_BITS 22
#define LENGTH_MASK ((((uint64_t)1) << LENGTH_BITS) - 1)
#define MAX_VARINT_BYTES 9
#define ORDINAL_BITS 23
#define ORDINAL_MASK ((((uint32_t)1) << ORDINAL_BITS) - 1)
/* Most blocks a table holds (MAX_CAR_INDEX_BLOCKS is 8M; car.py takes the pure-Python table above this). */
#define MAX_ORDINALS ((Py_ssize_t)ORDINAL_MASK - 1)

/* --- the table ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    unsigned char *cids;   /* ENTRY bytes per ordinal; an all-zero entry is an odd CID's placeholder */
    uint64_t *where;       /* offset << LENGTH_BITS | length */
    uint32_t *kept_at;     /* position + 1 in kept, 0 when not kept */
    unsigned char *used;   /* one bit per ordinal: referenced by the walk */
    Py_ssize_t count;      /* ordinals handed out */
    Py_ssize_t capacity;   /* ordinals the arrays above have room for */
    uint32_t *slots;       /* tag << ORDINAL_BITS | (ordinal + 1); 0 for empty */
    size_t mask;           /* slot count - 1 */
    Py_ssize_t in_slots;   /* ordinals in the slot table (odd ones are not) */
    unsigned char *kept;   /* kept block data, back to back */
    size_t kept_len, kept_cap;
    uint64_t seed;
    PyObject *odd;         /* dict: binary CID -> ordinal, for CIDs not of the 36-byte sha2-256 form */
} Table;

static inline size_t slot_of(const Table *t, const unsigned char *cid) {
    uint64_t w;
    memcpy(&w, cid + 4, 8);
    w = (w ^ t->seed) * 0x9E3779B97F4A7C15ULL;
    w ^= w >> 29;
    w *= 0xBF58476D1CE4E5B9ULL;
    w ^= w >> 32;
    return (size_t)w & t->mask;
}

/* The digest bits a slot keeps above the ordinal (from bytes the slot hash does not use). */
static inline uint32_t tag_of(const unsigned char *cid) {
    uint32_t tag;
    memcpy(&tag, cid + 12, 4);
    return tag & ~ORDINAL_MASK;
}

/*
 * The section at buf[pos]: a minimal varint length (at most MAX_VARINT_BYTES), then that many bytes,
 * all before end. Returns 0 when it is whole (its bytes start at *at and are *size long), -1 when it
 * cannot be a section (a varint not minimal or overlong, a zero length, one over max_section), or how
 * many more bytes it needs: 1 while its length itself is cut off. scan() and raw_sections() share it.
 */
static inline Py_ssize_t read_section(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t end,
                                      Py_ssize_t max_section, Py_ssize_t *at, uint64_t *size) {
    Py_ssize_t i = pos;
    uint64_t n = 0;
    int shift = 0, done = 0;
    while (i < end) {
        unsigned char byte = buf[i++];
        n |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            done = (byte != 0 || i - pos == 1) ? 1 : -1; /* -1: not minimal */
            break;
        }
        if (i - pos >= MAX_VARINT_BYTES) {
            done = -1; /* overlong */
            break;
        }
        shift += 7;
    }
    if (done == 0) return 1;
    if (done < 0 || n == 0 || n > (uint64_t)max_section) return -1;
    if (i + (Py_ssize_t)n > end) return i + (Py_ssize_t)n - end;
    *at = i;
    *size = n;
    return 0;
}

/* A CID of the form the table holds: version 1, a one-byte codec, sha2-256, 32-byte digest. */
static inline int table_form(const unsigned char *cid) {
    return cid[0] == 0x01 && cid[1] < 0x80 && cid[2] == 0x12 && cid[3] == 0x20;
}

/* Ordinal of cid (ENTRY bytes of the table's form), or -1. */
static inline Py_ssize_t probe_from(const Table *t, const unsigned char *cid, size_t i) {
    uint32_t tag = tag_of(cid);
    for (;;) {
        uint32_t held = t->slots[i];
        if (!held) return -1;
        if ((held & ~ORDINAL_MASK) == tag) {
            size_t o = (size_t)(held & ORDINAL_MASK) - 1;
            if (memcmp(t->cids + o * ENTRY, cid, ENTRY) == 0) return (Py_ssize_t)o;
        }
        i = (i + 1) & t->mask;
    }
}

static inline Py_ssize_t probe(const Table *t, const unsigned char *cid) {
    return probe_from(t, cid, slot_of(t, cid));
}

/* Put ordinal o (its CID is cids[o]) in the first free slot of its run. */
static inline void place(uint32_t *slots, size_t mask, size_t i, const unsigned char *cid, Py_ssize_t o) {
    while (slots[i]) i = (i + 1) & mask;
    slots[i] = tag_of(cid) | (uint32_t)(o + 1);
}

static int grow_slots(Table *t) {
    size_t size = (t->mask + 1) << 1;
    uint32_t *slots = PyMem_Calloc(size, sizeof(uint32_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    for (Py_ssize_t o = 0; o < t->count; o++) {
        const unsigned char *cid = t->cids + (size_t)o * ENTRY;
        if (cid[0] == 0) continue; /* an odd CID's placeholder */
        place(slots, t->mask, slot_of(t, cid), cid, o);
    }
    return 0;
}

static int grow_entries(Table *t) {
    Py_ssize_t cap = t->capacity < 1024 ? 1024 : t->capacity * 2;
    unsigned char *cids = PyMem_Realloc(t->cids, (size_t)cap * ENTRY);
    if (cids) t->cids = cids;
    uint64_t *where = cids ? PyMem_Realloc(t->where, (size_t)cap * sizeof(uint64_t)) : NULL;
    if (where) t->where = where;
    uint32_t *kept_at = where ? PyMem_Realloc(t->kept_at, (size_t)cap * sizeof(uint32_t)) : NULL;
    if (kept_at) t->kept_at = kept_at;
    unsigned char *used = kept_at ? PyMem_Realloc(t->used, (size_t)(cap + 7) / 8) : NULL;
    if (used == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(used + (t->capacity + 7) / 8, 0, (size_t)(cap + 7) / 8 - (size_t)(t->capacity + 7) / 8);
    t->used = used;
    t->capacity = cap;
    return 0;
}

/* Hand out the next ordinal (cid NULL: an odd CID's placeholder; else slot is slot_of(cid)).
 * -1 with an exception on failure. */
static Py_ssize_t append(Table *t, const unsigned char *cid, size_t slot, uint64_t offset, uint64_t length,
                         const unsigned char *keep, size_t keep_len) {
    if (t->count >= MAX_ORDINALS) {
        PyErr_SetString(PyExc_OverflowError, "the C index holds at most 8388606 blocks");
        return -1;
    }
    if (t->count >= t->capacity && grow_entries(t) < 0) return -1;
    Py_ssize_t o = t->count;
    unsigned char *entry = t->cids + (size_t)o * ENTRY;
    if (cid) memcpy(entry, cid, ENTRY);
    else memset(entry, 0, ENTRY);
    t->where[o] = offset << LENGTH_BITS | length;
    t->kept_at[o] = 0;
    if (keep) {
        if (t->kept_len + keep_len > t->kept_cap) {
            size_t cap = t->kept_cap ? t->kept_cap : 65536;
            while (cap < t->kept_len + keep_len) cap <<= 1;
            unsigned char *kept = PyMem_Realloc(t->kept, cap);
            if (kept == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            t->kept = kept;
            t->kept_cap = cap;
        }
        memcpy(t->kept + t->kept_len, keep, keep_len);
        t->kept_at[o] = (uint32_t)(t->kept_len + 1);
        t->kept_len += keep_len;
    }
    t->count = o + 1;
    if (cid) {
        place(t->slots, t->mask, slot, cid, o);
        t->in_slots++;
        if ((size_t)t->in_slots * 2 >= t->mask + 1 && grow_slots(t) < 0) return -1;
    }
    return o;
}

static int table_init(Table *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"expected_blocks", "seed", NULL};
    Py_ssize_t expected = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nK", kwlist, &expected, &seed)) return -1;
    if (t->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Table is already initialised");
        return -1;
    }
    size_t size = 1024;
    while (expected > 0 && size < (size_t)expected * 2 && size < ((size_t)1 << 32)) size <<= 1;
    t->slots = PyMem_Calloc(size, sizeof(uint32_t));
    if (t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->mask = size - 1;
    t->seed = seed;
    t->odd = PyDict_New();
    return t->odd == NULL ? -1 : 0;
}

static void table_dealloc(Table *t) {
    PyMem_Free(t->cids);
    PyMem_Free(t->where);
    PyMem_Free(t->kept_at);
    PyMem_Free(t->used);
    PyMem_Free(t->slots);
    PyMem_Free(t->kept);
    Py_XDECREF(t->odd);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int check_ready(Table *t) {
    if (t->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Table is not initialised");
        return -1;
    }
    return 0;
}

/*
 * scan(buf, pos, base, max_section, max_blocks, keep_prefix, keep_budget) -> (pos, missing)
 *
 * Index every section of buf[pos:] this module can prove well formed; see the
 * contract at the top. missing: 0 when buf is used up exactly, > 0 when the
 * section at pos is incomplete (1 for its length varint), -1 when the caller
 * must handle the section at pos itself.
 */
static PyObject *table_scan(Table *t, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, base, max_section, max_blocks, keep_budget;
    const unsigned char *prefix;
    Py_ssize_t prefix_len;
    if (check_ready(t) < 0) return NULL;
    if (!PyArg_ParseTuple(args, "y*nnnny#n", &view, &pos, &base, &max_section, &max_blocks, &prefix,
                          &prefix_len, &keep_budget))
        return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len, missing = 0;
    if (pos < 0 || pos > end || base < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "position out of range");
        return NULL;
    }
    if (max_section > (Py_ssize_t)LENGTH_MASK) max_section = (Py_ssize_t)LENGTH_MASK;
    if (keep_budget > (Py_ssize_t)0xFFFFFFFE) keep_budget = (Py_ssize_t)0xFFFFFFFE; /* kept_at is 32 bits */
    while (pos < end) {
        Py_ssize_t at, stop;
        uint64_t size;
        missing = read_section(buf, pos, end, max_section, &at, &size);
        if (missing != 0) break;
        stop = at + (Py_ssize_t)size;
        const unsigned char *cid = buf + at;
        if (size < ENTRY || !table_form(cid)) {
            missing = -1;
            break;
        }
        const unsigned char *data = cid + ENTRY;
        size_t length = (size_t)size - ENTRY;
        size_t slot = slot_of(t, cid);
        __builtin_prefetch(&t->slots[slot]); /* a cache miss, taken while the block is hashed */
        unsigned char digest[32];
        sha256_digest(data, length, digest);
        if (memcmp(digest, cid + 4, 32) != 0) {
            missing = -1;
            break;
        }
        if (probe_from(t, cid, slot) < 0) {
            if (t->count >= max_blocks) {
                missing = -1;
                break;
            }
            int keep = prefix_len > 0 && length >= (size_t)prefix_len && memcmp(data, prefix, prefix_len) == 0 &&
                       t->kept_len + length <= (size_t)(keep_budget < 0 ? 0 : keep_budget);
            if (append(t, cid, slot, (uint64_t)(base + (data - buf)), length, keep ? data : NULL, length) < 0) {
                PyBuffer_Release(&view);
                return NULL;
            }
        }
        pos = stop;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nn", pos, missing);
}

/* add_odd(cid, offset, length) -> ordinal: a block whose CID the table cannot hold (its side dict). */
static PyObject *table_add_odd(Table *t, PyObject *args) {
    PyObject *cid;
    unsigned long long offset, length;
    if (check_ready(t) < 0) return NULL;
    if (!PyArg_ParseTuple(args, "SKK", &cid, &offset, &length)) return NULL;
    if (length > LENGTH_MASK || offset >= (((uint64_t)1) << (64 - LENGTH_BITS))) {
        PyErr_SetString(PyExc_ValueError, "location out of range");
        return NULL;
    }
    Py_ssize_t o = append(t, NULL, 0, offset, length, NULL, 0);
    if (o < 0) return NULL;
    PyObject *number = PyLong_FromSsize_t(o);
    if (number == NULL || PyDict_SetItem(t->odd, cid, number) < 0) {
        Py_XDECREF(number);
        return NULL;
    }
    return number;
}

/* Ordinal of the binary CID in raw, or -1 (sets an exception and returns -2 on a bad argument). */
static Py_ssize_t lookup(Table *t, PyObject *raw) {
    if (!PyBytes_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "a binary CID (bytes) is required");
        return -2;
    }
    const unsigned char *cid = (const unsigned char *)PyBytes_AS_STRING(raw);
    if (PyBytes_GET_SIZE(raw) == ENTRY && table_form(cid)) return probe(t, cid);
    if (PyDict_GET_SIZE(t->odd) == 0) return -1;
    PyObject *found = PyDict_GetItemWithError(t->odd, raw);
    if (found == NULL) return PyErr_Occurred() ? -2 : -1;
    return PyLong_AsSsize_t(found);
}

static PyObject *table_find(Table *t, PyObject *raw) {
    if (check_ready(t) < 0) return NULL;
    Py_ssize_t o = lookup(t, raw);
    return o < -1 ? NULL : PyLong_FromSsize_t(o);
}

/* mark(raw) -> ordinal or -1: find, and note that the walk used the block. */
static PyObject *table_mark(Table *t, PyObject *raw) {
    if (check_ready(t) < 0) return NULL;
    Py_ssize_t o = lookup(t, raw);
    if (o < -1) return NULL;
    if (o >= 0) t->used[o >> 3] |= (unsigned char)(1 << (o & 7));
    return PyLong_FromSsize_t(o);
}

static PyObject *raw_name = NULL; /* interned "raw": the CID class keeps its binary form there */

/*
 * mark_all(cids) -> -1 when every CID of the sequence is held (all marked), else
 * the position of the first that is not (those before it marked). The
 * records of one leaf: their slots are fetched together, then their CIDs,
 * so in a file in any order their cache misses overlap instead of queueing.
 */
#define BATCH 16
static PyObject *table_mark_all(Table *t, PyObject *seq) {
    if (check_ready(t) < 0) return NULL;
    PyObject *fast = PySequence_Fast(seq, "mark_all() takes a sequence of CIDs");
    if (fast == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), result = -1;
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t first = 0; first < n && result < 0; first += BATCH) {
        Py_ssize_t count = n - first < BATCH ? n - first : BATCH, got = 0;
        PyObject *raws[BATCH];
        size_t slots[BATCH];
        for (; got < count; got++) {
            PyObject *raw = PyObject_GetAttr(items[first + got], raw_name);
            if (raw == NULL) break;
            raws[got] = raw;
            if (PyBytes_Check(raw) && PyBytes_GET_SIZE(raw) == ENTRY &&
                table_form((const unsigned char *)PyBytes_AS_STRING(raw))) {
                slots[got] = slot_of(t, (const unsigned char *)PyBytes_AS_STRING(raw));
                __builtin_prefetch(&t->slots[slots[got]]);
            }
        }
        if (got == count) {
            for (Py_ssize_t j = 0; j < count; j++) { /* the slots are in: fetch the CIDs they name */
                if (PyBytes_Check(raws[j]) && PyBytes_GET_SIZE(raws[j]) == ENTRY &&
                    table_form((const unsigned char *)PyBytes_AS_STRING(raws[j]))) {
                    uint32_t held = t->slots[slots[j]];
                    if (held) __builtin_prefetch(t->cids + (size_t)((held & ORDINAL_MASK) - 1) * ENTRY);
                }
            }
            for (Py_ssize_t j = 0; j < count; j++) {
                PyObject *raw = raws[j];
                Py_ssize_t o;
                if (PyBytes_Check(raw) && PyBytes_GET_SIZE(raw) == ENTRY &&
                    table_form((const unsigned char *)PyBytes_AS_STRING(raw)))
                    o = probe_from(t, (const unsigned char *)PyBytes_AS_STRING(raw), slots[j]);
                else
                    o = lookup(t, raw);
                if (o < -1) {
                    result = -2;
                    break;
                }
                if (o < 0) {
                    result = first + j;
                    break;
                }
                t->used[o >> 3] |= (unsigned char)(1 << (o & 7));
            }
        } else {
            result = -2;
        }
        for (Py_ssize_t j = 0; j < got; j++) Py_DECREF(raws[j]);
    }
    Py_DECREF(fast);
    return result == -2 ? NULL : PyLong_FromSsize_t(result);
}

static int ordinal_arg(Table *t, PyObject *arg, Py_ssize_t *o) {
    if (check_ready(t) < 0) return -1;
    *o = PyLong_AsSsize_t(arg);
    if (*o == -1 && PyErr_Occurred()) return -1;
    if (*o < 0 || *o >= t->count) {
        PyErr_SetString(PyExc_IndexError, "ordinal out of range");
        return -1;
    }
    return 0;
}

/* location(ordinal) -> (offset of the data, its length) */
static PyObject *table_location(Table *t, PyObject *arg) {
    Py_ssize_t o;
    if (ordinal_arg(t, arg, &o) < 0) return NULL;
    uint64_t where = t->where[o];
    return Py_BuildValue("KK", (unsigned long long)(where >> LENGTH_BITS),
                         (unsigned long long)(where & LENGTH_MASK));
}

/* kept(ordinal) -> the block's data when kept in memory, else None */
static PyObject *table_kept(Table *t, PyObject *arg) {
    Py_ssize_t o;
    if (ordinal_arg(t, arg, &o) < 0) return NULL;
    uint32_t at = t->kept_at[o];
    if (!at) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)t->kept + at - 1, (Py_ssize_t)(t->where[o] & LENGTH_MASK));
}

static PyObject *table_referenced_count(Table *t, PyObject *Py_UNUSED(ignored)) {
    if (check_ready(t) < 0) return NULL;
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < (t->count + 7) / 8; i++) n += __builtin_popcount(t->used[i]);
    return PyLong_FromSsize_t(n);
}

static PyObject *table_memory_bytes(Table *t, PyObject *Py_UNUSED(ignored)) {
    size_t n = (size_t)t->capacity * (ENTRY + sizeof(uint64_t) + sizeof(uint32_t)) + (size_t)(t->capacity + 7) / 8 +
               (t->mask + 1) * sizeof(uint32_t) + t->kept_cap;
    return PyLong_FromSize_t(n);
}

static PyObject *table_kept_bytes(Table *t, void *Py_UNUSED(closure)) { return PyLong_FromSize_t(t->kept_len); }

static Py_ssize_t table_len(Table *t) { return t->count; }

static PyMethodDef table_methods[] = {
    {"scan", (PyCFunction)table_scan, METH_VARARGS, "Index the sections of buf[pos:] proven well formed."},
    {"add_odd", (PyCFunction)table_add_odd, METH_VARARGS, "Index a block by its odd CID (side dict)."},
    {"find", (PyCFunction)table_find, METH_O, "Ordinal of a binary CID, or -1."},
    {"mark", (PyCFunction)table_mark, METH_O, "Ordinal of a binary CID (marked as used), or -1."},
    {"mark_all", (PyCFunction)table_mark_all, METH_O, "Mark a sequence of CIDs; -1, or where the first absent is."},
    {"location", (PyCFunction)table_location, METH_O, "(offset, length) of a block's data."},
    {"kept", (PyCFunction)table_kept, METH_O, "A kept block's data, or None."},
    {"referenced_count", (PyCFunction)table_referenced_count, METH_NOARGS, "Blocks marked as used."},
    {"memory_bytes", (PyCFunction)table_memory_bytes, METH_NOARGS, "Bytes allocated by the table."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef table_getset[] = {
    {"kept_bytes", (getter)table_kept_bytes, NULL, "Bytes of block data kept in memory.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods table_as_sequence = {.sq_length = (lenfunc)table_len};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "atrepo.core._carindex.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Compact index of a CAR's blocks (see car.CarIndex).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)table_init,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
    .tp_getset = table_getset,
    .tp_as_sequence = &table_as_sequence,
};

/*
 * raw_sections(buf, pos, base, max_section, out) -> (pos, missing)
 *
 * The streaming reader's loop (car.parse_raw_sections) for the common form:
 * append (binary CID, data) for each section of buf[pos:] with a minimal
 * length varint, a 36-byte dag-cbor or raw sha2-256 CID and data that hashes
 * to it. Same return as scan(): -1 hands the section at pos back to the
 * Python loop, which appends it (an odd CID) or raises its located error.
 */
static PyObject *raw_sections(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, base, max_section;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "y*nnnO!", &view, &pos, &base, &max_section, &PyList_Type, &out)) return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len, missing = 0;
    if (pos < 0 || pos > end || base < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "position out of range");
        return NULL;
    }
    while (pos < end) {
        Py_ssize_t at, stop;
        uint64_t size;
        missing = read_section(buf, pos, end, max_section, &at, &size);
        if (missing != 0) break;
        stop = at + (Py_ssize_t)size;
        const unsigned char *cid = buf + at;
        if (size < ENTRY || cid[0] != 0x01 || (cid[1] != 0x71 && cid[1] != 0x55) || cid[2] != 0x12 ||
            cid[3] != 0x20) {
            missing = -1;
            break;
        }
        unsigned char digest[32];
        sha256_digest(cid + ENTRY, (size_t)size - ENTRY, digest);
        if (memcmp(digest, cid + 4, 32) != 0) {
            missing = -1;
            break;
        }
        PyObject *pair = PyTuple_New(2);
        PyObject *raw = PyBytes_FromStringAndSize((const char *)cid, ENTRY);
        PyObject *data = PyBytes_FromStringAndSize((const char *)cid + ENTRY, (Py_ssize_t)size - ENTRY);
        if (pair == NULL || raw == NULL || data == NULL) {
            Py_XDECREF(pair);
            Py_XDECREF(raw);
            Py_XDECREF(data);
            PyBuffer_Release(&view);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, raw);
        PyTuple_SET_ITEM(pair, 1, data);
        int failed = PyList_Append(out, pair);
        Py_DECREF(pair);
        if (failed) {
            PyBuffer_Release(&view);
            return NULL;
        }
        pos = stop;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nn", pos, missing);
}

/* _digest(data, portable=False) -> SHA-256 of data, for the tests against hashlib (either compression). */
static PyObject *digest(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer view;
    int portable = 0;
    unsigned char out[32];
    if (!PyArg_ParseTuple(args, "y*|p", &view, &portable)) return NULL;
    int saved = sha256_have_shani;
    if (portable) sha256_have_shani = 0;
    sha256_digest(view.buf, (size_t)view.len, out);
    sha256_have_shani = saved;
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyMethodDef module_methods[] = {
    {"raw_sections", raw_sections, METH_VARARGS, "Parse the common sections of buf[pos:] as (CID, data)."},
    {"_digest", digest, METH_VARARGS, "SHA-256 as the index computes it (a test hook)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_carindex", "C fast path for CAR indexing (see car.CarIndex).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__carindex(void) {
    sha256_detect();
    raw_name = PyUnicode_InternFromString("raw");
    if (raw_name == NULL) return NULL;
    if (PyType_Ready(&TableType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(module, "Table", (PyObject *)&TableType) < 0 ||
        PyModule_AddIntConstant(module, "SHA_EXTENSIONS", sha256_have_shani) < 0 ||
        PyModule_AddIntConstant(module, "MAX_BLOCKS", (long)MAX_ORDINALS) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
