/*
 * Optional SQLite VFS shim that writes a transaction's WAL frames with one system call.
 *
 * Why: SQLite appends each frame of the write-ahead log with two pwrite calls (its
 * 24-byte header, then the page). A one-record commit of the host dirties about 27
 * pages, so 54 small writes precede the fsync; on the VMs we run on a system call
 * costs about 5 us, and those writes took 0.26 ms of the commit where one write of
 * the same bytes takes 0.01 ms (bench/README.md). This VFS wraps the default one
 * and, for WAL files only, gathers consecutive writes in memory and hands them to
 * the real file in one write when SQLite syncs the log, reads it, asks its size,
 * truncates it or closes it, or when the gathered bytes stop being contiguous.
 *
 * Safety rests on one fact of SQLite's WAL writer: with synchronous=FULL a commit
 * syncs the log (xSync) after writing its frames and before publishing them in the
 * wal-index, so no other connection can look for a frame that is still only in
 * this buffer. The store opens its writer connection through this VFS only when it
 * runs synchronous=FULL; with NORMAL a commit does not sync, and this VFS must not
 * be used. Every other file (the database, the rollback journal, temp files) and
 * every other method pass straight through. A failed gathered write is reported
 * by the call that flushed it (the sync of the commit), so the commit fails and is
 * rolled back, as if the first small write had failed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define VFS_NAME "atrepo-walbatch"
/* Gather at most this much; a bigger run of frames goes out in several writes. */
#define MAX_GATHER (8 * 1024 * 1024)

typedef struct {
    sqlite3_file base;   /* pMethods: ours */
    sqlite3_file *real;  /* the wrapped file, stored right after this struct */
    int wal;             /* gather writes (WAL files only) */
    char *buf;
    int len;
    int cap;
    sqlite3_int64 off;   /* file offset of buf[0] */
} BatchFile;

static sqlite3_vfs batch_vfs;
static sqlite3_vfs *real_vfs;

#define REAL(f) (((BatchFile *)(f))->real)

/* The unix VFS masks a write's length with 0x1ffff (it writes at most 128 KiB - 1 per
 * call and reports a length that is a multiple of 128 KiB as a full disk), so gathered
 * bytes go out in pieces below that: one write for a commit of up to 30 frames. */
#define MAX_PIECE 0x1F000

static int flush(BatchFile *p) {
    int done = 0;
    int rc = SQLITE_OK;
    while (done < p->len && rc == SQLITE_OK) {
        int n = p->len - done < MAX_PIECE ? p->len - done : MAX_PIECE;
        rc = p->real->pMethods->xWrite(p->real, p->buf + done, n, p->off + done);
        done += n;
    }
    p->len = 0;
    return rc;
}

static int b_close(sqlite3_file *f) {
    BatchFile *p = (BatchFile *)f;
    int rc = flush(p);
    int rc2 = p->real->pMethods->xClose(p->real);
    free(p->buf);
    p->buf = NULL;
    p->cap = 0;
    return rc != SQLITE_OK ? rc : rc2;
}

static int b_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off) {
    BatchFile *p = (BatchFile *)f;
    int rc = flush(p);
    if (rc != SQLITE_OK) return rc;
    return p->real->pMethods->xRead(p->real, out, amt, off);
}

static int b_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off) {
    BatchFile *p = (BatchFile *)f;
    if (!p->wal) return p->real->pMethods->xWrite(p->real, data, amt, off);
    if (p->len > 0 && (off != p->off + p->len || p->len + amt > MAX_GATHER)) {
        int rc = flush(p);
        if (rc != SQLITE_OK) return rc;
    }
    if (amt > MAX_GATHER) return p->real->pMethods->xWrite(p->real, data, amt, off);
    if (p->len + amt > p->cap) {
        int cap = p->cap ? p->cap : 64 * 1024;
        while (cap < p->len + amt) cap *= 2;
        char *grown = realloc(p->buf, (size_t)cap);
        if (grown == NULL) {
            int rc = flush(p);
            if (rc != SQLITE_OK) return rc;
            return p->real->pMethods->xWrite(p->real, data, amt, off);
        }
        p->buf = grown;
        p->cap = cap;
    }
    if (p->len == 0) p->off = off;
    memcpy(p->buf + p->len, data, (size_t)amt);
    p->len += amt;
    return SQLITE_OK;
}

static int b_truncate(sqlite3_file *f, sqlite3_int64 size) {
    BatchFile *p = (BatchFile *)f;
    int rc = flush(p);
    if (rc != SQLITE_OK) return rc;
    return p->real->pMethods->xTruncate(p->real, size);
}

static int b_sync(sqlite3_file *f, int flags) {
    BatchFile *p = (BatchFile *)f;
    int rc = flush(p);
    if (rc != SQLITE_OK) return rc;
    return p->real->pMethods->xSync(p->real, flags);
}

static int b_file_size(sqlite3_file *f, sqlite3_int64 *size) {
    BatchFile *p = (BatchFile *)f;
    int rc = flush(p);
    if (rc != SQLITE_OK) return rc;
    return p->real->pMethods->xFileSize(p->real, size);
}

static int b_lock(sqlite3_file *f, int level) { return REAL(f)->pMethods->xLock(REAL(f), level); }
static int b_unlock(sqlite3_file *f, int level) { return REAL(f)->pMethods->xUnlock(REAL(f), level); }
static int b_check_reserved(sqlite3_file *f, int *out) {
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int b_file_control(sqlite3_file *f, int op, void *arg) {
    BatchFile *p = (BatchFile *)f;
    int rc = flush(p);
    if (rc != SQLITE_OK) return rc;
    if (op == SQLITE_FCNTL_VFSNAME) {
        /* SQLite frees the name it gets back: name both layers, as other shims do. */
        rc = p->real->pMethods->xFileControl(p->real, op, arg);
        if (rc == SQLITE_OK) {
            char *inner = *(char **)arg;
            *(char **)arg = sqlite3_mprintf("%s/%z", VFS_NAME, inner);
        }
        return rc;
    }
    return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int b_sector_size(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int b_device_characteristics(sqlite3_file *f) {
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int b_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out) {
    return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, out);
}
static int b_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void b_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int b_shm_unmap(sqlite3_file *f, int delete_flag) {
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}
static int b_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **out) {
    BatchFile *p = (BatchFile *)f;
    int rc = flush(p);
    if (rc != SQLITE_OK) return rc;
    return p->real->pMethods->xFetch(p->real, off, amt, out);
}
static int b_unfetch(sqlite3_file *f, sqlite3_int64 off, void *ptr) {
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, ptr);
}

/* One method table per version of the wrapped file's, so SQLite never calls a
 * method the real file lacks. */
static sqlite3_io_methods methods[3];

static int b_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
    BatchFile *p = (BatchFile *)f;
    (void)vfs;
    memset(p, 0, sizeof(*p));
    p->real = (sqlite3_file *)&p[1];
    int rc = real_vfs->xOpen(real_vfs, name, p->real, flags, out_flags);
    if (p->real->pMethods == NULL) {
        p->base.pMethods = NULL;  /* nothing to close */
        return rc;
    }
    int version = p->real->pMethods->iVersion;
    if (version < 1) version = 1;
    if (version > 3) version = 3;
    p->base.pMethods = &methods[version - 1];
    p->wal = (flags & SQLITE_OPEN_WAL) != 0;
    return rc;
}

/* Everything else is the real VFS's, called with the real VFS. */
static int v_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
    (void)v;
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}
static int v_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
    (void)v;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}
static int v_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
    (void)v;
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}
static void *v_dlopen(sqlite3_vfs *v, const char *name) {
    (void)v;
    return real_vfs->xDlOpen(real_vfs, name);
}
static void v_dlerror(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    real_vfs->xDlError(real_vfs, n, out);
}
static void (*v_dlsym(sqlite3_vfs *v, void *lib, const char *sym))(void) {
    (void)v;
    return real_vfs->xDlSym(real_vfs, lib, sym);
}
static void v_dlclose(sqlite3_vfs *v, void *lib) {
    (void)v;
    real_vfs->xDlClose(real_vfs, lib);
}
static int v_randomness(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return real_vfs->xRandomness(real_vfs, n, out);
}
static int v_sleep(sqlite3_vfs *v, int us) {
    (void)v;
    return real_vfs->xSleep(real_vfs, us);
}
static int v_current_time(sqlite3_vfs *v, double *out) {
    (void)v;
    return real_vfs->xCurrentTime(real_vfs, out);
}
static int v_last_error(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return real_vfs->xGetLastError(real_vfs, n, out);
}
static int v_current_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
    (void)v;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static PyObject *walbatch_register(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    if (sqlite3_vfs_find(VFS_NAME) != NULL) return PyUnicode_FromString(VFS_NAME);
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (base == NULL || base->iVersion < 2 || base->xCurrentTimeInt64 == NULL) Py_RETURN_NONE;
    real_vfs = base;
    for (int i = 0; i < 3; i++) {
        sqlite3_io_methods *m = &methods[i];
        memset(m, 0, sizeof(*m));
        m->iVersion = i + 1;
        m->xClose = b_close;
        m->xRead = b_read;
        m->xWrite = b_write;
        m->xTruncate = b_truncate;
        m->xSync = b_sync;
        m->xFileSize = b_file_size;
        m->xLock = b_lock;
        m->xUnlock = b_unlock;
        m->xCheckReservedLock = b_check_reserved;
        m->xFileControl = b_file_control;
        m->xSectorSize = b_sector_size;
        m->xDeviceCharacteristics = b_device_characteristics;
        if (i >= 1) {
            m->xShmMap = b_shm_map;
            m->xShmLock = b_shm_lock;
            m->xShmBarrier = b_shm_barrier;
            m->xShmUnmap = b_shm_unmap;
        }
        if (i >= 2) {
            m->xFetch = b_fetch;
            m->xUnfetch = b_unfetch;
        }
    }
    memset(&batch_vfs, 0, sizeof(batch_vfs));
    batch_vfs.iVersion = 2;
    batch_vfs.szOsFile = (int)sizeof(BatchFile) + base->szOsFile;
    batch_vfs.mxPathname = base->mxPathname;
    batch_vfs.zName = VFS_NAME;
    batch_vfs.xOpen = b_open;
    batch_vfs.xDelete = v_delete;
    batch_vfs.xAccess = v_access;
    batch_vfs.xFullPathname = v_full_pathname;
    batch_vfs.xDlOpen = v_dlopen;
    batch_vfs.xDlError = v_dlerror;
    batch_vfs.xDlSym = v_dlsym;
    batch_vfs.xDlClose = v_dlclose;
    batch_vfs.xRandomness = v_randomness;
    batch_vfs.xSleep = v_sleep;
    batch_vfs.xCurrentTime = v_current_time;
    batch_vfs.xGetLastError = v_last_error;
    batch_vfs.xCurrentTimeInt64 = v_current_time64;
    if (sqlite3_vfs_register(&batch_vfs, 0) != SQLITE_OK) Py_RETURN_NONE;
    return PyUnicode_FromString(VFS_NAME);
}

static PyMethodDef walbatch_methods[] = {
    {"register", walbatch_register, METH_NOARGS,
     "Register the VFS (once; not as the default) and return its name, or None when it cannot be."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef walbatch_module = {
    PyModuleDef_HEAD_INIT, "_walbatch",
    "SQLite VFS shim that writes a transaction's WAL frames in one system call.", -1, walbatch_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walbatch(void) { return PyModule_Create(&walbatch_module); }
