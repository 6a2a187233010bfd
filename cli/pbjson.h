/* Protocol buffer messages as JSON, for `--json` output: every field of
 * the message by its .proto name, walking protobuf-c's descriptors, so each
 * command prints what the service answered without a hand-written encoder.
 * Repeated fields are arrays, map fields objects, enums their value names,
 * 64-bit integers numbers, google.protobuf.Timestamp an RFC 3339 string
 * (UTC, nanoseconds), bytes base64. Unset message fields are left out;
 * scalars are always present (proto3 has no presence). */
#pragma once

#include <json-c/json.h>
#include <protobuf-c/protobuf-c.h>

/* A new JSON object for m, or NULL when out of memory. */
json_object *ts_pbjson_from_message(const ProtobufCMessage *m);
