/* Protobuf's wire format, read without decoding: what a handler checks in a
 * request before it pays for decoding it. protobuf-c allocates per element
 * of a repeated field, so a 16 MiB request of a million tiny map entries
 * costs a million allocations and hundreds of MiB before a handler could
 * refuse it; counting the entries first costs one pass over the bytes. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TS_WIRE_MAX_DEPTH 8

/* Counts the length-delimited fields at path in the message p (len bytes):
 * path[0] is a field number of the message, path[1] one of the message(s)
 * in that field, and so on (depth numbers, 1..TS_WIRE_MAX_DEPTH). Repeated
 * occurrences of an embedded message all count, as protobuf merges them.
 * Linear in len, no allocation. Returns 0 and *ret_count, -EINVAL (bad
 * depth), or -EBADMSG (not well formed: a field cut short, a length past
 * its message's end, a group or unknown wire type). Whatever protobuf-c
 * decodes is well formed here too. */
int ts_wire_count(const uint8_t *p, size_t len, const uint32_t *path, size_t depth, size_t *ret_count);
