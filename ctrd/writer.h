/* Writing a blob into containerd's content store: one Content.Write stream
 * per writer (STAT to open or resume, WRITE, COMMIT).
 *
 * A writer is used by one thread at a time. Its data is sent in 1 MiB
 * messages without waiting for each answer (a few MiB may be in flight);
 * the answers are checked as they come. After a failed write the writer
 * only refuses; free it and open again to resume. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ctrd/ctrd.h"

typedef struct ts_ctrd_writer ts_ctrd_writer;

/* Opens (or resumes) the ingest ref ("layer-<digest>"...) for a blob of
 * total bytes (0: not known) whose digest is expected (NULL: not known).
 * With lease, containerd adds the ingest, the committed blob and an already
 * stored blob to that lease. An ingest of ref with a different total is
 * discarded first; one with the same total is resumed: continue from
 * ts_ctrd_writer_offset(). That offset is the total already when the blob
 * is stored in another namespace (containerd shares it): commit without
 * writing. A ref locked by another writer is tried again with randomized
 * backoff for about 2 s.
 * Returns 0 and *ret, 1 when the blob with digest expected is stored
 * already (*ret is NULL: there is nothing to write), -EAGAIN (the ref
 * stayed locked), -EINVAL, or an error as ctrd/ctrd.h says. */
int ts_ctrd_writer_open(ts_ctrd *c, const char *lease, const char *ref, int64_t total,
                        const char *expected, ts_ctrd_writer **ret, ts_error **err);

/* Bytes of the blob containerd holds or has been sent: where the next
 * write goes. */
int64_t ts_ctrd_writer_offset(const ts_ctrd_writer *w);

/* Appends n bytes. Returns 0, -EFBIG (past the declared total), -ERANGE
 * (containerd's offset is not ours), or an error as ctrd/ctrd.h says. */
int ts_ctrd_writer_write(ts_ctrd_writer *w, const void *p, size_t n, ts_error **err);

/* Commits the blob with labels (NULL: none) after every write is answered;
 * containerd checks the size and the digest. Returns 0, 1 when the blob was
 * stored by someone else meanwhile (it counts as done), -EBADMSG (size or
 * digest not the declared ones; containerd's message names both), or an
 * error as ctrd/ctrd.h says. The writer is finished either way: free it. */
int ts_ctrd_writer_commit(ts_ctrd_writer *w, char *const *labels, ts_error **err);

/* Discards the ingest and its data, and frees the writer (also when it
 * fails). Returns 0 or an error as ctrd/ctrd.h says. */
int ts_ctrd_writer_abort(ts_ctrd_writer *w, ts_error **err);

/* Ends the stream after the data sent so far is written, leaving an
 * uncommitted ingest to be resumed, and frees. Accepts NULL; returns NULL. */
ts_ctrd_writer *ts_ctrd_writer_free(ts_ctrd_writer *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_ctrd_writer *, ts_ctrd_writer_free);
