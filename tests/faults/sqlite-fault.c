/* An SQLite fault injector for tests, loaded with LD_PRELOAD: at the program's first
 * sqlite3_open*() it registers a VFS shim over the default one as the new default. The shim
 * counts the writes, syncs, truncations and locks (file locks and, in WAL mode, the locks
 * of the shared-memory index) of the files it opens and fails one
 * (or every one from then on) with an I/O error or "disk full". The configuration file is
 * named by SFID_FAULT_SQLITE (see fault-conf.h):
 *
 *	op = write          # write, sync, truncate, lock or any (default any)
 *	file = sfid.db      # only files whose path contains this (default every file)
 *	nth = 5             # the 5th counted operation fails (0 or absent: every one)
 *	repeat = yes        # ... and every later one
 *	error = full        # full (SQLITE_FULL) or ioerr (SQLITE_IOERR_WRITE, _FSYNC,
 *	                    # _TRUNCATE, _LOCK or _SHMLOCK; the default)
 *	delay_ms = 100      # hit operations wait this long first
 *	trace = PATH        # "N write|sync|truncate|lock:FILE RESULT" per counted op
 *	arm_file = PATH     # count only while this file exists; a new one restarts the
 *	                    # count, its own lines (nth = 7, op = sync, ...) override
 *
 * A lock that "fails" with full returns SQLITE_IOERR_LOCK: SQLite has no full lock. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "fault-conf.h"

struct shim_file {
	sqlite3_file base;	/* pMethods = the shim's methods for this file */
	sqlite3_file *real;	/* the real file, right after this struct */
	char name[64];		/* the file's name, for the trace: its last part */
	bool counted;		/* name matches conf.file */
	sqlite3_io_methods methods;
};

static struct fault_conf conf;
static bool conf_ok;
static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#define REAL(f) (((struct shim_file *)(f))->real)

/* Returns 0 to go on, or the error the operation op of file f returns unrun. */
static int inject(sqlite3_file *file, const char *op, int ioerr)
{
	struct shim_file *f = (struct shim_file *)file;
	char what[96];
	unsigned long n;
	int rc;

	if (!conf_ok || !f->counted || !fault_armed(&conf))
		return 0;
	if (strcmp(conf.op, "any") != 0 && strcmp(conf.op, op) != 0)
		return 0;
	n = fault_next();
	snprintf(what, sizeof(what), "%s:%s", op, f->name);
	if (!fault_hits(&conf, n)) {
		fault_trace(&conf, n, what, 0, false);
		return 0;
	}
	fault_delay(&conf);
	rc = strcmp(conf.error, "full") == 0 && ioerr != SQLITE_IOERR_LOCK &&
	     ioerr != SQLITE_IOERR_SHMLOCK ? SQLITE_FULL : ioerr;
	fault_trace(&conf, n, what, rc, true);
	return rc;
}

static int x_close(sqlite3_file *f)
{
	sqlite3_file *r = REAL(f);
	int rc = r->pMethods ? r->pMethods->xClose(r) : SQLITE_OK;

	f->pMethods = NULL;
	return rc;
}

static int x_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
	return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int x_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	int rc = inject(f, "write", SQLITE_IOERR_WRITE);

	return rc ? rc : REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int x_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	int rc = inject(f, "truncate", SQLITE_IOERR_TRUNCATE);

	return rc ? rc : REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int x_sync(sqlite3_file *f, int flags)
{
	int rc = inject(f, "sync", SQLITE_IOERR_FSYNC);

	return rc ? rc : REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int x_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int x_lock(sqlite3_file *f, int level)
{
	int rc = inject(f, "lock", SQLITE_IOERR_LOCK);

	return rc ? rc : REAL(f)->pMethods->xLock(REAL(f), level);
}

static int x_unlock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int x_check_reserved(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int x_file_control(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int x_sector_size(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int x_device_characteristics(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int x_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **p)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, p);
}

static int x_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	int rc = flags & SQLITE_SHM_LOCK ? inject(f, "lock", SQLITE_IOERR_SHMLOCK) : 0;

	return rc ? rc : REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void x_shm_barrier(sqlite3_file *f)
{
	REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int x_shm_unmap(sqlite3_file *f, int delete_flag)
{
	return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}

static int x_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **p)
{
	return REAL(f)->pMethods->xFetch(REAL(f), off, n, p);
}

static int x_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
		  int *out_flags)
{
	struct shim_file *f = (struct shim_file *)file;
	const sqlite3_io_methods *rm;
	const char *base;
	int rc;

	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
	rm = f->real->pMethods;
	if (!rm)
		return rc; /* nothing to close */
	base = name ? strrchr(name, '/') : NULL;
	snprintf(f->name, sizeof(f->name), "%s", base ? base + 1 : name ? name : "temp");
	f->counted = name && (!conf.file[0] || strstr(name, conf.file));
	f->methods = (sqlite3_io_methods){
		.iVersion = rm->iVersion,
		.xClose = x_close,
		.xRead = x_read,
		.xWrite = x_write,
		.xTruncate = x_truncate,
		.xSync = x_sync,
		.xFileSize = x_file_size,
		.xLock = x_lock,
		.xUnlock = x_unlock,
		.xCheckReservedLock = x_check_reserved,
		.xFileControl = x_file_control,
		.xSectorSize = x_sector_size,
		.xDeviceCharacteristics = x_device_characteristics,
		.xShmMap = rm->iVersion >= 2 ? x_shm_map : NULL,
		.xShmLock = rm->iVersion >= 2 ? x_shm_lock : NULL,
		.xShmBarrier = rm->iVersion >= 2 ? x_shm_barrier : NULL,
		.xShmUnmap = rm->iVersion >= 2 ? x_shm_unmap : NULL,
		.xFetch = rm->iVersion >= 3 ? x_fetch : NULL,
		.xUnfetch = rm->iVersion >= 3 ? x_unfetch : NULL,
	};
	f->base.pMethods = &f->methods;
	return rc;
}

/* The other VFS methods go to the real VFS with the real VFS as their argument. */
static int v_delete(sqlite3_vfs *v, const char *n, int sync)
{
	return real_vfs->xDelete(real_vfs, n, sync);
}

static int v_access(sqlite3_vfs *v, const char *n, int flags, int *out)
{
	return real_vfs->xAccess(real_vfs, n, flags, out);
}

static int v_full_pathname(sqlite3_vfs *v, const char *n, int size, char *out)
{
	return real_vfs->xFullPathname(real_vfs, n, size, out);
}

static void *v_dlopen(sqlite3_vfs *v, const char *n)
{
	return real_vfs->xDlOpen(real_vfs, n);
}

static void v_dlerror(sqlite3_vfs *v, int n, char *out)
{
	real_vfs->xDlError(real_vfs, n, out);
}

static void (*v_dlsym(sqlite3_vfs *v, void *h, const char *s))(void)
{
	return real_vfs->xDlSym(real_vfs, h, s);
}

static void v_dlclose(sqlite3_vfs *v, void *h)
{
	real_vfs->xDlClose(real_vfs, h);
}

static int v_randomness(sqlite3_vfs *v, int n, char *out)
{
	return real_vfs->xRandomness(real_vfs, n, out);
}

static int v_sleep(sqlite3_vfs *v, int us)
{
	return real_vfs->xSleep(real_vfs, us);
}

static int v_current_time(sqlite3_vfs *v, double *t)
{
	return real_vfs->xCurrentTime(real_vfs, t);
}

static int v_get_last_error(sqlite3_vfs *v, int n, char *out)
{
	return real_vfs->xGetLastError(real_vfs, n, out);
}

static int v_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *t)
{
	return real_vfs->xCurrentTimeInt64(real_vfs, t);
}

static int v_set_system_call(sqlite3_vfs *v, const char *n, sqlite3_syscall_ptr p)
{
	return real_vfs->xSetSystemCall(real_vfs, n, p);
}

static sqlite3_syscall_ptr v_get_system_call(sqlite3_vfs *v, const char *n)
{
	return real_vfs->xGetSystemCall(real_vfs, n);
}

static const char *v_next_system_call(sqlite3_vfs *v, const char *n)
{
	return real_vfs->xNextSystemCall(real_vfs, n);
}

static void install(void)
{
	conf_ok = fault_conf_load("SFID_FAULT_SQLITE", &conf) == 0;
	if (!conf_ok && getenv("SFID_FAULT_SQLITE"))
		fprintf(stderr, "sqlite-fault: configuration refused: no fault injected\n");
	real_vfs = sqlite3_vfs_find(NULL);
	if (!real_vfs)
		return;
	shim_vfs = *real_vfs;
	shim_vfs.zName = "sfid-fault";
	shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real_vfs->szOsFile;
	shim_vfs.pNext = NULL;
	shim_vfs.pAppData = NULL;
	shim_vfs.xOpen = v_open;
	shim_vfs.xDelete = v_delete;
	shim_vfs.xAccess = v_access;
	shim_vfs.xFullPathname = v_full_pathname;
	shim_vfs.xDlOpen = v_dlopen;
	shim_vfs.xDlError = v_dlerror;
	shim_vfs.xDlSym = v_dlsym;
	shim_vfs.xDlClose = v_dlclose;
	shim_vfs.xRandomness = v_randomness;
	shim_vfs.xSleep = v_sleep;
	shim_vfs.xCurrentTime = v_current_time;
	shim_vfs.xGetLastError = v_get_last_error;
	if (real_vfs->iVersion >= 2)
		shim_vfs.xCurrentTimeInt64 = v_current_time_int64;
	if (real_vfs->iVersion >= 3) {
		shim_vfs.xSetSystemCall = v_set_system_call;
		shim_vfs.xGetSystemCall = v_get_system_call;
		shim_vfs.xNextSystemCall = v_next_system_call;
	}
	sqlite3_vfs_register(&shim_vfs, 1);
}

typedef int (*open_v2_fn)(const char *, sqlite3 **, int, const char *);
typedef int (*open_fn)(const char *, sqlite3 **);

int sqlite3_open_v2(const char *path, sqlite3 **db, int flags, const char *vfs)
{
	open_v2_fn next = (open_v2_fn)dlsym(RTLD_NEXT, "sqlite3_open_v2");

	pthread_once(&once, install);
	return next(path, db, flags, vfs);
}

int sqlite3_open(const char *path, sqlite3 **db)
{
	open_fn next = (open_fn)dlsym(RTLD_NEXT, "sqlite3_open");

	pthread_once(&once, install);
	return next(path, db);
}
