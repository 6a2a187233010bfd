#include "thin.h"

#include <errno.h>
#include <inttypes.h>
#include <libdevmapper.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "common/log.h"
#include "dm.h"

int ts_thin_check_id(uint64_t id, ts_error **err) {
        if (id > TS_THIN_MAX_ID)
                return ts_error_setf_plain(err, ERANGE,
                                           "thin device id %" PRIu64 " is above the pool's "
                                           "24-bit limit (%u)",
                                           id, TS_THIN_MAX_ID);
        return 0;
}

static int pool_message(const ts_pool *pool, const char *msg, ts_error **err) {
        return ts_dm_message(pool->name, msg, err);
}

int ts_thin_create(const ts_pool *pool, uint32_t id, ts_error **err) {
        int r = ts_thin_check_id(id, err);
        if (r < 0)
                return r;
        char msg[64];
        snprintf(msg, sizeof(msg), "create_thin %" PRIu32, id);
        return pool_message(pool, msg, err);
}

int ts_thin_snap(const ts_pool *pool, uint32_t id, uint32_t origin_id, const char *origin_name,
                 ts_error **err) {
        int r = ts_thin_check_id(id, err);
        if (r < 0)
                return r;
        r = ts_thin_check_id(origin_id, err);
        if (r < 0)
                return r;

        bool suspended = false;
        if (origin_name) {
                ts_dm_info info;
                r = ts_dm_info_get(origin_name, &info, err);
                if (r < 0)
                        return ts_error_prefix(err, r, "create_snap %" PRIu32, id);
                if (info.exists && !info.suspended) {
                        /* The kernel requires an active origin to be quiesced so
                         * the snapshot sees every write the origin acknowledged. */
                        r = ts_dm_suspend(origin_name, err);
                        if (r < 0)
                                return ts_error_prefix(err, r, "create_snap %" PRIu32, id);
                        suspended = true;
                }
        }

        char msg[64];
        snprintf(msg, sizeof(msg), "create_snap %" PRIu32 " %" PRIu32, id, origin_id);
        r = pool_message(pool, msg, err);

        if (suspended) {
                ts_error *resume_err = NULL;
                int q = ts_dm_resume(origin_name, r < 0 ? &resume_err : err);
                ts_error_free(resume_err);
                if (q < 0 && r >= 0)
                        r = ts_error_prefix(err, q, "create_snap %" PRIu32 ": resume origin", id);
        }
        return r;
}

int ts_thin_activate(const ts_pool *pool, const char *name, uint32_t id, uint64_t size_bytes,
                     unsigned flags, ts_error **err) {
        return ts_thin_activate_stepped(pool, name, id, size_bytes, flags, NULL, NULL, err);
}

static void thin_table(const ts_pool *pool, uint32_t id, char buf[static 64]) {
        snprintf(buf, 64, "%" PRIu32 ":%" PRIu32 " %" PRIu32, pool->major, pool->minor, id);
}

int ts_thin_activate_stepped(const ts_pool *pool, const char *name, uint32_t id, uint64_t size_bytes,
                             unsigned flags, ts_dm_step_fn step, void *userdata, ts_error **err) {
        int r = ts_thin_check_id(id, err);
        if (r < 0)
                return r;
        if (size_bytes == 0 || size_bytes % TS_SECTOR_SIZE != 0)
                return ts_error_setf_plain(err, EINVAL,
                                           "activate %s: size %" PRIu64 " is not a positive "
                                           "multiple of 512 bytes",
                                           name, size_bytes);
        char params[64];
        thin_table(pool, id, params);
        r = ts_dm_create_stepped(name, NULL, size_bytes / TS_SECTOR_SIZE, "thin", params,
                                 flags & TS_THIN_READ_ONLY, step, userdata, err);
        if (r < 0)
                return ts_error_prefix(err, r, "activate thin %" PRIu32 " of pool %s", id,
                                       pool->name);
        return 0;
}

/* The node /dev/mapper/<name> is the block device info names. */
static bool node_in_place(const char *name, const ts_dm_info *info) {
        char path[256];
        struct stat st;
        snprintf(path, sizeof path, "/dev/mapper/%s", name);
        return stat(path, &st) == 0 && S_ISBLK(st.st_mode) && major(st.st_rdev) == info->major &&
               minor(st.st_rdev) == info->minor;
}

int ts_thin_probe(const ts_pool *pool, const char *name, uint32_t id, ts_thin_found *ret,
                  ts_error **err) {
        ts_dm_info info;
        _cleanup_free_ char *type = NULL, *params = NULL;
        unsigned n = 0;
        int r = ts_dm_table_query(name, false, &info, &type, &params, &n, err);
        if (r >= 0 && info.exists && !type && info.inactive_table)
                r = ts_dm_table_query(name, true, &info, &type, &params, &n, err);
        if (r < 0)
                return r;
        char want[64];
        thin_table(pool, id, want);
        if (type && (n != 1 || strcmp(type, "thin") != 0 || strcmp(params, want) != 0))
                return ts_error_setf_plain(err, EMEDIUMTYPE,
                                           "device %s is not thin device %" PRIu32 " of pool %s "
                                           "(its %stable: %s %s%s): left as it is",
                                           name, id, pool->name, info.live_table ? "" : "inactive ",
                                           type, params, n > 1 ? " ..." : "");
        *ret = (ts_thin_found) {
                .exists = info.exists,
                .usable = info.exists && info.live_table && !info.suspended && node_in_place(name, &info),
                .live_table = info.live_table,
                .suspended = info.suspended,
                .open_count = info.open_count,
        };
        return 0;
}

int ts_thin_deactivate(const char *name, unsigned flags, ts_error **err) {
        /* Something (blkid, a closing mount) may hold the device for a moment:
         * retry with backoff 5, 10, 20 ... 640 ms, about 1.3 s in all. With
         * TS_THIN_DEFERRED a busy device is handed to the kernel at once. */
        long delay_ms = 5;
        for (int attempt = 0;; attempt++) {
                ts_error *e = NULL;
                int r = ts_dm_remove(name, 0, &e);
                if (r == 0 || r == -ENXIO) {
                        ts_error_free(e);
                        return 0;
                }
                if (r == -EBUSY && (flags & TS_THIN_DEFERRED)) {
                        ts_error_free(e);
                        r = ts_dm_remove(name, TS_DM_REMOVE_DEFERRED, err);
                        return r == -ENXIO ? 0 : r;
                }
                if (r != -EBUSY || attempt >= 8) {
                        ts_error_move(err, &e);
                        return ts_error_prefix(err, r, "deactivate");
                }
                ts_error_free(e);
                struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };
                nanosleep(&ts, NULL);
                if (delay_ms < 640)
                        delay_ms *= 2;
        }
}

int ts_thin_delete(const ts_pool *pool, uint32_t id, ts_error **err) {
        int r = ts_thin_check_id(id, err);
        if (r < 0)
                return r;
        char msg[64];
        snprintf(msg, sizeof(msg), "delete %" PRIu32, id);
        ts_error *e = NULL;
        r = pool_message(pool, msg, &e);
        if (r == -ENODATA) {
                ts_error_free(e);
                return 0;
        }
        if (r < 0)
                ts_error_move(err, &e);
        return r;
}

int ts_thin_parse_status(const char *params, ts_thin_status *ret) {
        ts_dm_init(); /* libdevmapper logs parse errors: route them */
        struct dm_pool *mem = dm_pool_create("ts-thin-status", 128);
        if (!mem)
                return -ENOMEM;
        struct dm_status_thin *s = NULL;
        int ok = dm_get_status_thin(mem, params, &s);
        if (ok && s)
                *ret = (ts_thin_status) {
                        .mapped_sectors = s->mapped_sectors,
                        .highest_mapped_sector = s->highest_mapped_sector,
                        .fail = s->fail,
                };
        dm_pool_destroy(mem);
        return ok && s ? 0 : -EINVAL;
}

int ts_thin_get_status(const char *name, ts_thin_status *ret, ts_error **err) {
        _cleanup_free_ char *type = NULL, *params = NULL;
        int r = ts_dm_target_get(name, false, &type, NULL, &params, err);
        if (r < 0)
                return r;
        if (strcmp(type, "thin") != 0)
                return ts_error_setf_plain(err, EMEDIUMTYPE, "device %s is a %s device, not thin",
                                           name, type);
        if (ts_thin_parse_status(params, ret) < 0)
                return ts_error_setf_plain(err, EINVAL, "thin %s: cannot read its status '%s'",
                                           name, params);
        return 0;
}
