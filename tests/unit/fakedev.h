/* A device layer for the snapshotter's unit tests (plugin/snapdev.h), with
 * the behaviour of dm-thin that the snapshotter relies on: ids that exist or
 * not, active or inactive devices, devices held open (busy), deferred
 * removal of a device released while open, discards.
 *
 * Its state lives in memory shared across fork(), so a test can run an
 * operation in a child, kill the child between two steps, and re-open the
 * snapshotter in the parent over what the child left (the LMDB store is on
 * disk). Every device call is recorded; any call can be made to fail with a
 * chosen errno, and the process can be killed before or after any call. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plugin/snapdev.h"

#define TS_FAKEDEV_MAX 64        /* highest device id (the store's dev_id_max in tests) */
#define TS_FAKEDEV_BASE_MAPPED (1 << 20) /* bytes a formatted base device maps */

typedef struct ts_fakedev_device {
        bool exists, active;
        bool held;     /* open by a user (a mount): deactivate and drop are -EBUSY */
        bool deferred; /* released while held: inactive at its last close */
        uint32_t origin;
        uint64_t size;
        int64_t mapped;
        unsigned discards;
} ts_fakedev_device;

typedef struct ts_fakedev_pool {
        pthread_mutex_t lock; /* robust: a killed child may have held it */
        ts_fakedev_device dev[TS_FAKEDEV_MAX + 1];
        bool full;            /* check_space and snap: -ENOSPC */
        unsigned formats;     /* base devices formatted */
        char fail_op[16];     /* the fail_nth call of fail_op fails with -fail_errno */
        unsigned fail_nth;
        int fail_errno;
        bool fail_fills;      /* the injected failure leaves the pool full */
        unsigned crash_call;  /* kill the process at this call (counted from 1), 0: never */
        bool crash_after;     /* after the call is done rather than before */
        unsigned n_calls;     /* calls so far (check_space and path are not counted) */
        char log[4096];       /* the calls since ts_fakedev_calls, "snap 3 1, activate 3" */
} ts_fakedev_pool;

/* A pool in shared memory (MAP_SHARED | MAP_ANONYMOUS); NULL on failure. */
ts_fakedev_pool *ts_fakedev_pool_new(void);
void ts_fakedev_pool_free(ts_fakedev_pool *p);

/* A device layer on p, for ts_snapshotter_config.dev. NULL on ENOMEM. */
ts_snapdev *ts_fakedev_new(ts_fakedev_pool *p);

/* The calls recorded since the last call of this, copied into buf; then
 * forgets them. Returns buf. */
const char *ts_fakedev_calls(ts_fakedev_pool *p, char *buf, size_t len);

/* The nth call (from now, counting from 1) of op ("snap", "activate", ...)
 * fails with -errnum. */
void ts_fakedev_fail(ts_fakedev_pool *p, const char *op, unsigned nth, int errnum);

/* A user opens (hold; only an active device can be opened) or closes
 * (unhold) device id; the last close of a released device deactivates it.
 * Writing maps bytes. */
void ts_fakedev_hold(ts_fakedev_pool *p, uint32_t id);
void ts_fakedev_unhold(ts_fakedev_pool *p, uint32_t id);
void ts_fakedev_write(ts_fakedev_pool *p, uint32_t id, int64_t bytes);

/* A reboot: every device inactive and closed. */
void ts_fakedev_reboot(ts_fakedev_pool *p);

/* Device ids that exist, ascending, into ids (room for TS_FAKEDEV_MAX);
 * returns how many. */
size_t ts_fakedev_existing(ts_fakedev_pool *p, uint32_t *ids);
