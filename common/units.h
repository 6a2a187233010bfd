/* Numbers with units, to and from text: counts, modes, sizes (K/M/G/T) and
 * durations, checked as they are parsed (no atoi anywhere). */
#pragma once

#include <stdint.h>
#include <stddef.h>

/* Parses a decimal unsigned integer that fits in uint64_t; no sign, no
 * spaces, no trailing characters. Returns 0, -EINVAL or -ERANGE. */
int ts_units_parse_u64(const char *s, uint64_t *ret);

/* As ts_units_parse_u64, for values that fit in uint32_t. */
int ts_units_parse_u32(const char *s, uint32_t *ret);

/* Parses an octal file mode such as "0755" or "644" (at most 07777).
 * Returns 0 or -EINVAL / -ERANGE. */
int ts_units_parse_mode(const char *s, uint32_t *ret);

/* Parses a size in bytes: a number with an optional binary suffix
 * K, M, G, T, P (also KiB/MiB/... and k; "B" for bytes), e.g. "64M", "10G",
 * "512". Suffixes are powers of 1024. Returns 0, -EINVAL (syntax) or
 * -ERANGE (overflow). */
int ts_units_parse_size(const char *s, uint64_t *ret);

/* Parses a duration: digits and a unit, ms, s, m or h ("500ms", "30s",
 * "10m", "1h"), in milliseconds, above 0 and within 32 bits. Returns 0 or
 * -EINVAL. */
int ts_units_parse_duration_ms(const char *s, uint32_t *ret);

/* Writes a human-readable size ("1.5 GiB", "512 B") into buf.
 * Returns buf. */
char *ts_units_format_size(uint64_t bytes, char *buf, size_t len);
