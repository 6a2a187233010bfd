#include "filter.h"

#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "filter-internal.h"

/* ---- AST ---- */

enum op {
        OP_PRESENT,
        OP_EQUAL,
        OP_NOT_EQUAL,
        OP_MATCHES,
};

typedef struct selector {
        char **fieldpath;
        size_t n_fields;
        enum op op;
        char *value;
        size_t value_len;
        bool re_ok;
        regex_t re;
} selector;

typedef struct conj {
        selector *sel;
        size_t n;
} conj;

struct ts_filter {
        conj *alts;
        size_t n;
};

static void selector_done(selector *s) {
        for (size_t i = 0; i < s->n_fields; i++)
                free(s->fieldpath[i]);
        free(s->fieldpath);
        free(s->value);
        if (s->re_ok)
                regfree(&s->re);
}

static void conj_done(conj *c) {
        for (size_t i = 0; i < c->n; i++)
                selector_done(&c->sel[i]);
        free(c->sel);
}

ts_filter *ts_filter_free(ts_filter *f) {
        if (f) {
                for (size_t i = 0; i < f->n; i++)
                        conj_done(&f->alts[i]);
                free(f->alts);
                free(f);
        }
        return NULL;
}

/* ---- UTF-8, with Go's decoding rules ---- */

#define RUNE_ERROR 0xFFFD
#define MAX_RUNE 0x10FFFF

/* Decodes one rune at p (n > 0 bytes); invalid input gives (RUNE_ERROR, 1). */
static int32_t decode_rune(const unsigned char *p, size_t n, size_t *width) {
        unsigned char c = p[0];
        *width = 1;
        if (c < 0x80)
                return c;
        int need;
        int32_t r, min;
        if (c >= 0xC2 && c <= 0xDF) {
                need = 1;
                r = c & 0x1F;
                min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
                need = 2;
                r = c & 0x0F;
                min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
                need = 3;
                r = c & 0x07;
                min = 0x10000;
        } else
                return RUNE_ERROR;
        if (n < (size_t) need + 1)
                return RUNE_ERROR;
        for (int i = 1; i <= need; i++) {
                if ((p[i] & 0xC0) != 0x80)
                        return RUNE_ERROR;
                r = (r << 6) | (p[i] & 0x3F);
        }
        if (r < min || r > MAX_RUNE || (r >= 0xD800 && r <= 0xDFFF))
                return RUNE_ERROR;
        *width = (size_t) need + 1;
        return r;
}

static size_t encode_rune(int32_t r, char out[4]) {
        if (r < 0 || r > MAX_RUNE || (r >= 0xD800 && r <= 0xDFFF))
                r = RUNE_ERROR;
        if (r < 0x80) {
                out[0] = (char) r;
                return 1;
        }
        if (r < 0x800) {
                out[0] = (char) (0xC0 | (r >> 6));
                out[1] = (char) (0x80 | (r & 0x3F));
                return 2;
        }
        if (r < 0x10000) {
                out[0] = (char) (0xE0 | (r >> 12));
                out[1] = (char) (0x80 | ((r >> 6) & 0x3F));
                out[2] = (char) (0x80 | (r & 0x3F));
                return 3;
        }
        out[0] = (char) (0xF0 | (r >> 18));
        out[1] = (char) (0x80 | ((r >> 12) & 0x3F));
        out[2] = (char) (0x80 | ((r >> 6) & 0x3F));
        out[3] = (char) (0x80 | (r & 0x3F));
        return 4;
}

/* Go's unicode.IsSpace. */
static bool is_space(int32_t r) {
        switch (r) {
        case '\t':
        case '\n':
        case '\v':
        case '\f':
        case '\r':
        case ' ':
        case 0x85:
        case 0xA0:
        case 0x1680:
        case 0x2028:
        case 0x2029:
        case 0x202F:
        case 0x205F:
        case 0x3000:
                return true;
        }
        return r >= 0x2000 && r <= 0x200A;
}

/* ---- scanner (containerd's filters/scanner.go) ---- */

enum {
        TOK_EOF = -1,
        TOK_QUOTED = -2,
        TOK_VALUE = -3,
        TOK_FIELD = -4,
        TOK_SEPARATOR = -5,
        TOK_OPERATOR = -6,
        TOK_ILLEGAL = -7,
};

typedef struct scanner {
        const char *in;
        size_t len;
        size_t pos;  /* start of the current rune */
        size_t ppos; /* end of the current rune */
        bool value;  /* an operator was seen: the next bare run is a value */
        const char *err;
} scanner;

static void scan_error(scanner *s, const char *msg) {
        if (!s->err)
                s->err = msg;
}

static int32_t scan_next(scanner *s) {
        if (s->pos >= s->len)
                return TOK_EOF;
        s->pos = s->ppos;
        if (s->ppos >= s->len)
                return TOK_EOF;
        size_t w;
        int32_t r = decode_rune((const unsigned char *) s->in + s->ppos, s->len - s->ppos, &w);
        s->ppos += w;
        if (r == RUNE_ERROR) {
                scan_error(s, "rune error");
                return TOK_ILLEGAL;
        }
        if (r == 0) {
                scan_error(s, "unexpected null");
                return TOK_ILLEGAL;
        }
        return r;
}

static int32_t scan_peek(scanner *s) {
        size_t pos = s->pos, ppos = s->ppos;
        int32_t ch = scan_next(s);
        s->pos = pos;
        s->ppos = ppos;
        return ch;
}

static bool is_field_rune(int32_t r) {
        return r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9');
}

static bool is_operator_rune(int32_t r) {
        return r == '=' || r == '!' || r == '~';
}

static bool is_quote_rune(int32_t r) {
        return r == '/' || r == '|' || r == '"';
}

static bool is_separator_rune(int32_t r) {
        return r == ',' || r == '.';
}

static bool is_value_rune(int32_t r) {
        if (r < 0x80)
                return r > ' ' && r < 0x7F && r != ',';
        size_t lo = 0, hi = TS_ARRAY_SIZE(value_rune_ranges);
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (r < value_rune_ranges[mid].lo)
                        hi = mid;
                else if (r > value_rune_ranges[mid].hi)
                        lo = mid + 1;
                else
                        return true;
        }
        return false;
}

static int digit_val(int32_t ch) {
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F')
                return ch - 'A' + 10;
        return 16;
}

static int32_t scan_digits(scanner *s, int32_t ch, int base, int n, bool *legal) {
        while (n > 0 && digit_val(ch) < base) {
                ch = scan_next(s);
                n--;
        }
        if (n > 0) {
                scan_error(s, "illegal numeric escape sequence");
                *legal = false;
                return ch;
        }
        *legal = true;
        return ch;
}

static int32_t scan_escape(scanner *s, int32_t quote, bool *legal) {
        int32_t ch = scan_next(s);
        *legal = false;
        switch (ch) {
        case 'a':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
        case 'v':
        case '\\':
                *legal = true;
                return scan_next(s);
        case '0' ... '7':
                return scan_digits(s, ch, 8, 3, legal);
        case 'x':
                return scan_digits(s, scan_next(s), 16, 2, legal);
        case 'u':
                return scan_digits(s, scan_next(s), 16, 4, legal);
        case 'U':
                return scan_digits(s, scan_next(s), 16, 8, legal);
        default:
                if (ch == quote) {
                        *legal = true;
                        return scan_next(s);
                }
                scan_error(s, "illegal escape sequence");
                return ch;
        }
}

static bool scan_quoted(scanner *s, int32_t quote) {
        bool illegal = false;
        int32_t ch = scan_next(s);
        while (ch != quote) {
                if (ch == '\n' || ch < 0) {
                        scan_error(s, "quoted literal not terminated");
                        return false;
                }
                if (ch == '\\') {
                        bool legal;
                        ch = scan_escape(s, quote, &legal);
                        if (!legal)
                                illegal = true;
                } else
                        ch = scan_next(s);
        }
        return !illegal;
}

static void scan_while(scanner *s, bool (*pred)(int32_t)) {
        for (;;) {
                int32_t ch = scan_peek(s);
                if (!pred(ch))
                        break;
                scan_next(s);
        }
}

static bool is_operator_char(int32_t r) {
        return is_operator_rune(r);
}

/* Returns the token; *ret_pos and the text [*ret_pos, s->ppos) as containerd's scan. */
static int32_t scan(scanner *s, size_t *ret_pos, size_t *ret_end) {
        int32_t ch = scan_next(s);
        size_t pos = s->pos;
        for (;;) {
                *ret_end = s->ppos;
                if (ch == TOK_EOF || ch == TOK_ILLEGAL) {
                        *ret_pos = s->pos;
                        *ret_end = s->pos;
                        return ch;
                }
                if (is_quote_rune(ch)) {
                        bool ok = scan_quoted(s, ch);
                        *ret_pos = pos;
                        *ret_end = s->ppos;
                        return ok ? TOK_QUOTED : TOK_ILLEGAL;
                }
                if (is_separator_rune(ch)) {
                        s->value = false;
                        *ret_pos = pos;
                        return TOK_SEPARATOR;
                }
                if (is_operator_rune(ch)) {
                        scan_while(s, is_operator_char);
                        s->value = true;
                        *ret_pos = pos;
                        *ret_end = s->ppos;
                        return TOK_OPERATOR;
                }
                if (is_space(ch)) {
                        ch = scan_next(s);
                        pos = s->pos;
                        continue;
                }
                if (s->value) {
                        scan_while(s, is_value_rune);
                        s->value = false;
                        *ret_pos = pos;
                        *ret_end = s->ppos;
                        return TOK_VALUE;
                }
                if (is_field_rune(ch)) {
                        scan_while(s, is_field_rune);
                        *ret_pos = pos;
                        *ret_end = s->ppos;
                        return TOK_FIELD;
                }
                *ret_pos = s->pos;
                *ret_end = s->pos;
                return ch;
        }
}

/* ---- unquoting (containerd's filters/quote.go) ---- */

static int unhex(char c) {
        int v = digit_val((unsigned char) c);
        return v < 16 ? v : -1;
}

/* Unquotes the token text t[0..n) (quotes included) into a malloc'ed buffer.
 * Returns 0, -EINVAL (quote syntax error), -ENOMEM. */
/* Unquoting: reads from s (len bytes left), writes to out at o. Every
 * escape produces at most as many bytes as it spans. */
typedef struct unq {
        const char *s;
        size_t len;
        char *out;
        size_t o;
} unq;

/* The byte a one-letter escape stands for, 0 for none. */
static char simple_escape(char e) {
        switch (e) {
        case 'a': return '\a';
        case 'b': return '\b';
        case 'f': return '\f';
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case 'v': return '\v';
        case '\\': return '\\';
        default: return 0;
        }
}

/* \xhh (a byte), \uhhhh and \Uhhhhhhhh (a rune, UTF-8 encoded). */
static int unescape_hex(unq *u, char e) {
        size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (u->len < digits)
                return -EINVAL;
        uint32_t u32 = 0;
        for (size_t j = 0; j < digits; j++) {
                int x = unhex(u->s[j]);
                if (x < 0)
                        return -EINVAL;
                u32 = (u32 << 4) | (uint32_t) x;
        }
        u->s += digits;
        u->len -= digits;
        /* containerd computes in a Go rune (int32): eight hex digits from 8 up
         * wrap negative, pass the "> MaxRune" check and append the low byte.
         * Same bytes here. */
        int32_t v = (int32_t) u32;
        if (e == 'x' || v < 0) {
                u->out[u->o++] = (char) (u32 & 0xff);
                return 0;
        }
        if (v > MAX_RUNE)
                return -EINVAL;
        char enc[4];
        size_t w = encode_rune(v, enc);
        memcpy(u->out + u->o, enc, w);
        u->o += w;
        return 0;
}

/* \ooo: three octal digits, at most 255; e is the first. */
static int unescape_octal(unq *u, char e) {
        int v = e - '0';
        if (u->len < 2)
                return -EINVAL;
        for (int j = 0; j < 2; j++) {
                int x = u->s[j] - '0';
                if (x < 0 || x > 7)
                        return -EINVAL;
                v = (v << 3) | x;
        }
        u->s += 2;
        u->len -= 2;
        if (v > 255)
                return -EINVAL;
        u->out[u->o++] = (char) v;
        return 0;
}

/* One escape after its backslash, inside a string quoted with quote. */
static int unescape(unq *u, char quote) {
        if (u->len < 1)
                return -EINVAL;
        char e = u->s[0];
        u->s++;
        u->len--;
        char c = simple_escape(e);
        if (c) {
                u->out[u->o++] = c;
                return 0;
        }
        if (e == 'x' || e == 'u' || e == 'U')
                return unescape_hex(u, e);
        if (e >= '0' && e <= '7')
                return unescape_octal(u, e);
        if ((e == '\'' || e == '"' || e == '|' || e == '/') && e == quote) {
                u->out[u->o++] = e;
                return 0;
        }
        return -EINVAL;
}

static int unquote(const char *t, size_t n, char **ret, size_t *ret_len) {
        if (n < 2)
                return -EINVAL;
        char quote = t[0];
        if (quote != t[n - 1])
                return -EINVAL;
        if (quote != '"' && quote != '|' && quote != '/')
                return -EINVAL;
        unq u = { .s = t + 1, .len = n - 2 };
        if (memchr(u.s, '\n', u.len))
                return -EINVAL;
        _cleanup_free_ char *out = u.out = malloc(u.len + 1);
        if (!out)
                return -ENOMEM;
        while (u.len > 0) {
                char c = u.s[0];
                if (c == quote)
                        return -EINVAL;
                u.s++;
                u.len--;
                if (c != '\\')
                        u.out[u.o++] = c;
                else if (unescape(&u, quote) < 0)
                        return -EINVAL;
        }
        out[u.o] = 0;
        *ret = TAKE_PTR(out);
        *ret_len = u.o;
        return 0;
}

/* ---- parser (containerd's filters/parser.go) ---- */

typedef struct parser {
        scanner sc;
        ts_error **err;
} parser;

_printf_(3, 4) static int mkerr(parser *p, size_t pos, const char *fmt, ...) {
        char *msg = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        const char *in = p->sc.in;
        size_t len = p->sc.len;
        /* the input may hold NULs: print with lengths */
        if (pos < len)
                ts_error_setf_plain(p->err, EINVAL, "filters: parse error: [%.*s >|%.*s|< %.*s]: %s", (int) pos,
                                    in, 1, in + pos, (int) (len - pos - 1), in + pos + 1,
                                    msg ? msg : "out of memory");
        else
                ts_error_setf_plain(p->err, EINVAL, "filters: parse error: [%.*s]: %s", (int) len, in,
                                    msg ? msg : "out of memory");
        free(msg);
        return -EINVAL;
}

static int parse_unquote(parser *p, size_t pos, size_t end, bool allow_alts, char **ret, size_t *ret_len) {
        const char *t = p->sc.in + pos;
        if (!allow_alts && t[0] != '\'' && t[0] != '"')
                return mkerr(p, pos, "invalid quote encountered");
        int r = unquote(t, end - pos, ret, ret_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return mkerr(p, pos, "unquoting failed: quote syntax error");
        return 0;
}

static int parse_field(parser *p, char **ret) {
        size_t pos, end;
        int32_t tok = scan(&p->sc, &pos, &end);
        switch (tok) {
        case TOK_FIELD: {
                char *f = strndup(p->sc.in + pos, end - pos);
                if (!f)
                        return -ENOMEM;
                *ret = f;
                return 0;
        }
        case TOK_QUOTED: {
                size_t len;
                return parse_unquote(p, pos, end, false, ret, &len);
        }
        case TOK_ILLEGAL:
                return mkerr(p, pos, "%s", p->sc.err ? p->sc.err : "illegal token");
        default:
                return mkerr(p, pos, "expected field or quoted");
        }
}

static int parse_fieldpath(parser *p, selector *sel) {
        for (;;) {
                char *f = NULL;
                int r = parse_field(p, &f);
                if (r < 0)
                        return r;
                char **nf = realloc(sel->fieldpath, (sel->n_fields + 1) * sizeof(char *));
                if (!nf) {
                        free(f);
                        return -ENOMEM;
                }
                sel->fieldpath = nf;
                sel->fieldpath[sel->n_fields++] = f;
                if (scan_peek(&p->sc) != '.')
                        return 0;
                size_t pos, end;
                if (scan(&p->sc, &pos, &end) != TOK_SEPARATOR)
                        return mkerr(p, pos, "expected a field separator (`.`)");
        }
}

/* ---- RE2 -> POSIX ERE ----
 *
 * Rewrites the RE2 spellings that ERE lacks and rejects, as Go's regexp/syntax
 * does, what glibc would accept with another meaning or at an exponential cost:
 * nested repetition ("a**", "x+++"), repeat counts above 1000, back-references,
 * and expansions whose nested repeat product passes RE_MAX_COPIES (glibc copies
 * the sub-tree once per repeat, so "((a{100}){100}){100}" would take gigabytes). */

#define RE_MAX_REPEAT 1000
#define RE_MAX_COPIES 1000
#define RE_MAX_DEPTH 1000
#define RE_MAX_LEN 65536

typedef struct rebuf {
        char *out;
        size_t o, cap;
        bool overflow;
} rebuf;

static void re_put(rebuf *b, const char *s, size_t n) {
        if (b->overflow || n > b->cap - b->o) {
                b->overflow = true;
                return;
        }
        memcpy(b->out + b->o, s, n);
        b->o += n;
}

static void re_putc(rebuf *b, char c) {
        re_put(b, &c, 1);
}

static bool is_ere_special(char c) {
        return strchr(".[]()*+?{}|^$\\", c) != NULL;
}

/* A literal byte outside a bracket. */
static void re_literal(rebuf *b, char c) {
        if (is_ere_special(c))
                re_putc(b, '\\');
        re_putc(b, c);
}

/* A literal byte inside a bracket: punctuation that brackets treat specially goes
 * in as a collating symbol. */
static void re_bracket_literal(rebuf *b, char c) {
        if (c == ']' || c == '[' || c == '-' || c == '^' || c == '\\') {
                char sym[5] = { '[', '.', c, '.', ']' };
                re_put(b, sym, 5);
        } else
                re_putc(b, c);
}

static int control_escape(char e) {
        switch (e) {
        case 'a':
                return '\a';
        case 'f':
                return '\f';
        case 'n':
                return '\n';
        case 'r':
                return '\r';
        case 't':
                return '\t';
        case 'v':
                return '\v';
        }
        return -1;
}

/* \xhh or \x{h...} at re[*i] (just after the x); returns the value or -1. */
static int32_t hex_escape(const char *re, size_t len, size_t *i) {
        int32_t v = 0;
        if (*i < len && re[*i] == '{') {
                /* as Go: any number of digits while the value stays a rune */
                size_t j = *i + 1, digits = 0;
                while (j < len && re[j] != '}') {
                        int d = digit_val((unsigned char) re[j]);
                        if (d >= 16)
                                return -1;
                        v = v * 16 + d;
                        if (v > MAX_RUNE)
                                return -1;
                        digits++;
                        j++;
                }
                if (j >= len || digits == 0 || v > MAX_RUNE)
                        return -1;
                *i = j + 1;
                return v;
        }
        for (int k = 0; k < 2; k++) {
                if (*i >= len)
                        return -1;
                int d = digit_val((unsigned char) re[*i]);
                if (d >= 16)
                        return -1;
                v = v * 16 + d;
                (*i)++;
        }
        return v;
}

/* Parses {n}, {n,} or {n,m} at re[i]; returns its length and the copies it makes,
 * 0 when it is not a repeat (a literal "{"), -1 when it is one Go rejects. *min is
 * the least number of repeats. */
static int parse_repeat(const char *re, size_t len, size_t i, uint64_t *copies, uint64_t *min) {
        size_t j = i + 1;
        uint64_t n = 0, m = 0;
        bool have_n = false, comma = false, have_m = false;
        while (j < len && re[j] >= '0' && re[j] <= '9') {
                n = n * 10 + (uint64_t) (re[j] - '0');
                if (n > 100000)
                        n = 100000;
                have_n = true;
                j++;
        }
        if (!have_n)
                return 0;
        if (j < len && re[j] == ',') {
                comma = true;
                j++;
                while (j < len && re[j] >= '0' && re[j] <= '9') {
                        m = m * 10 + (uint64_t) (re[j] - '0');
                        if (m > 100000)
                                m = 100000;
                        have_m = true;
                        j++;
                }
        }
        if (j >= len || re[j] != '}')
                return 0;
        if (n > RE_MAX_REPEAT || (have_m && (m > RE_MAX_REPEAT || m < n)))
                return -1;
        *min = n;
        if (!comma)
                *copies = n;
        else if (have_m)
                *copies = m;
        else
                *copies = n + 1;
        if (*copies == 0)
                *copies = 1;
        return (int) (j - i + 1);
}

/* Translates a bracket expression starting at re[*i] == '['. Returns 0 or -1. */
static int re_bracket(rebuf *b, const char *re, size_t len, size_t *i) {
        size_t j = *i + 1;
        re_putc(b, '[');
        if (j < len && re[j] == '^') {
                re_putc(b, '^');
                j++;
        }
        bool first = true;
        /* RE2 reads "[a-c-x]" as a range, a literal "-" and x; POSIX leaves a "-"
         * right after a range undefined (glibc rejects it), so it goes in as [.-.]. */
        enum { R_NONE, R_SINGLE, R_DASH } st = R_NONE;
        bool after_range = false;
        for (;;) {
                if (j >= len)
                        return -1; /* missing closing ] */
                char c = re[j];
                if (c == ']' && !first)
                        break;
                first = false;
                if (c == '[' && j + 1 < len && re[j + 1] == ':') {
                        const char *end = NULL;
                        for (size_t k = j + 2; k + 1 < len; k++)
                                if (re[k] == ':' && re[k + 1] == ']') {
                                        end = re + k;
                                        break;
                                }
                        if (!end)
                                return -1;
                        size_t n = (size_t) (end - (re + j)) + 2;
                        if (n == 8 && memcmp(re + j, "[:word:]", 8) == 0)
                                re_put(b, "[:alnum:]_", 10); /* RE2's ASCII word class */
                        else
                                re_put(b, re + j, n);
                        j += n;
                        /* a class cannot start a range: a "-" after it is literal */
                        st = R_NONE;
                        after_range = true;
                        continue;
                }
                if (c == '\\') {
                        if (j + 1 >= len)
                                return -1;
                        char e = re[j + 1];
                        j += 2;
                        int ctl = control_escape(e);
                        bool is_class = e == 'd' || e == 'w' || e == 's';
                        if (e == 'd')
                                re_put(b, "0-9", 3);
                        else if (e == 'w')
                                re_put(b, "[:alnum:]_", 10);
                        else if (e == 's')
                                re_put(b, "[:space:]", 9);
                        else if (ctl >= 0)
                                re_putc(b, (char) ctl);
                        else if (e == 'x') {
                                int32_t v = hex_escape(re, len, &j);
                                if (v < 0 || v >= 0x80)
                                        return -1;
                                re_bracket_literal(b, (char) v);
                        } else if ((unsigned char) e < 0x80 && !((e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') ||
                                                                 (e >= 'A' && e <= 'Z')))
                                re_bracket_literal(b, e);
                        else
                                return -1; /* \D \W \S \pL... cannot be said in a POSIX bracket */
                        st = R_NONE;
                        after_range = is_class;
                        continue;
                }
                bool closes_next = j + 1 < len && re[j + 1] == ']';
                if (c == '-' && after_range && !closes_next) {
                        re_bracket_literal(b, c);
                        st = R_SINGLE;
                        after_range = false;
                } else if (c == '-') {
                        re_putc(b, c);
                        st = st == R_SINGLE && !closes_next ? R_DASH : R_NONE;
                        after_range = false;
                } else {
                        if (c == '[')
                                re_bracket_literal(b, c);
                        else
                                re_putc(b, c);
                        after_range = st == R_DASH;
                        st = after_range ? R_NONE : R_SINGLE;
                }
                j++;
        }
        re_putc(b, ']');
        *i = j + 1;
        return 0;
}

/* Returns a malloc'ed ERE, or NULL with *why set (not valid RE2, or too costly). */
static char *re2_to_ere(const char *re, size_t len, int *cflags, const char **why) {
        enum { A_NONE, A_ATOM, A_REPEAT } last = A_NONE;
        /* where the last atom starts in the output, and whether it is an anchor */
        size_t last_start = 0;
        bool last_anchor = false;
        uint64_t last_weight = 1;
        bool dotall = false;
        *why = NULL;
        if (len > RE_MAX_LEN) {
                *why = "expression too long";
                return NULL;
        }
        _cleanup_free_ uint64_t *frames = calloc(RE_MAX_DEPTH + 1, sizeof(uint64_t));
        /* one input byte makes at most 5 (a "[" in a bracket becomes "[.[.]"; \w
         * there, 2 bytes, becomes 10); the terminating NUL is outside cap */
        rebuf b = { .out = malloc(len * 5 + 17), .cap = len * 5 + 16 };
        if (!b.out || !frames) {
                free(b.out);
                return NULL; /* *why stays NULL: out of memory */
        }
        size_t depth = 0, i = 0;
        frames[0] = 1;

        /* leading flags: (?i) (?s) (?is) ... */
        if (len >= 4 && re[0] == '(' && re[1] == '?') {
                size_t j = 2;
                int f = 0;
                bool s = false;
                while (j < len && (re[j] == 'i' || re[j] == 's')) {
                        if (re[j] == 'i')
                                f |= REG_ICASE;
                        else
                                s = true;
                        j++;
                }
                if (j > 2 && j < len && re[j] == ')') {
                        *cflags |= f;
                        dotall = s;
                        i = j + 1;
                }
        }

#define FAIL(msg)                                                                      \
        do {                                                                           \
                *why = msg;                                                            \
                free(b.out);                                                           \
                return NULL;                                                           \
        } while (0)
#define ATOM()                                                                         \
        do {                                                                           \
                last = A_ATOM;                                                         \
                last_weight = 1;                                                       \
                last_start = here;                                                     \
                last_anchor = false;                                                   \
        } while (0)
#define ANCHOR()                                                                       \
        do {                                                                           \
                ATOM();                                                                \
                last_anchor = true;                                                    \
        } while (0)

        while (i < len) {
                char c = re[i];
                size_t here = b.o;
                uint64_t copies = 0, min = 0;
                int rep = 0;
                if (c == '*' || c == '?')
                        copies = 1;
                else if (c == '+') {
                        copies = 2; /* glibc writes a+ as aa* */
                        min = 1;
                } else if (c == '{') {
                        rep = parse_repeat(re, len, i, &copies, &min);
                        if (rep < 0)
                                FAIL("invalid repeat count");
                }
                if (copies > 0) {
                        if (last == A_NONE)
                                FAIL("missing argument to repetition operator");
                        if (last == A_REPEAT)
                                FAIL("invalid nested repetition operator");
                        uint64_t product = copies * last_weight;
                        if (product > RE_MAX_COPIES)
                                FAIL("expression too large");
                        if (product > frames[depth])
                                frames[depth] = product;
                        size_t n = rep > 0 ? (size_t) rep : 1;
                        if (last_anchor) {
                                /* RE2 repeats an empty-width assertion ("^*"), glibc
                                 * rejects it: zero or more of it is nothing, one or
                                 * more is the assertion itself. */
                                if (min == 0)
                                        b.o = last_start;
                        } else
                                re_put(&b, re + i, n);
                        i += n;
                        last = A_REPEAT;
                        if (i < len && re[i] == '?')
                                i++; /* lazy: the same yes/no answer */
                        continue;
                }
                switch (c) {
                case '(':
                        if (i + 1 < len && re[i + 1] == '?') {
                                if (i + 2 < len && re[i + 2] == ':')
                                        i += 3;
                                else if (i + 3 < len && re[i + 2] == 'P' && re[i + 3] == '<') {
                                        const char *gt = memchr(re + i, '>', len - i);
                                        if (!gt)
                                                FAIL("invalid named capture");
                                        i = (size_t) (gt - re) + 1;
                                } else
                                        FAIL("unsupported group flags");
                        } else
                                i++;
                        if (++depth > RE_MAX_DEPTH)
                                FAIL("expression nests too deeply");
                        frames[depth] = 1;
                        re_putc(&b, '(');
                        last = A_NONE;
                        continue;
                case ')': {
                        if (depth == 0)
                                FAIL("unexpected )");
                        uint64_t inner = frames[depth--];
                        if (inner > frames[depth])
                                frames[depth] = inner;
                        re_putc(&b, ')');
                        i++;
                        last = A_ATOM;
                        last_weight = inner;
                        continue;
                }
                case '|':
                        re_putc(&b, '|');
                        i++;
                        last = A_NONE;
                        continue;
                case '[':
                        if (re_bracket(&b, re, len, &i) < 0)
                                FAIL("invalid character class");
                        ATOM();
                        continue;
                case '.':
                        if (dotall)
                                re_putc(&b, '.');
                        else
                                re_put(&b, "[^\n]", 4); /* RE2's . does not match a newline */
                        i++;
                        ATOM();
                        continue;
                case '^':
                case '$':
                        re_putc(&b, c);
                        i++;
                        ANCHOR();
                        continue;
                case '{':
                case '}':
                case ']':
                        re_putc(&b, '\\');
                        re_putc(&b, c);
                        i++;
                        ATOM();
                        continue;
                case '\\': {
                        if (i + 1 >= len)
                                FAIL("trailing backslash at end of expression");
                        char e = re[i + 1];
                        i += 2;
                        int ctl = control_escape(e);
                        if (e == 'd')
                                re_put(&b, "[0-9]", 5);
                        else if (e == 'D')
                                re_put(&b, "[^0-9]", 6);
                        else if (e == 'A')
                                re_putc(&b, '^');
                        else if (e == 'z')
                                re_putc(&b, '$');
                        else if (e == 'w' || e == 'W' || e == 's' || e == 'S' || e == 'b' || e == 'B') {
                                re_putc(&b, '\\');
                                re_putc(&b, e);
                        } else if (ctl >= 0)
                                re_putc(&b, (char) ctl);
                        else if (e == 'x') {
                                int32_t v = hex_escape(re, len, &i);
                                if (v < 0)
                                        FAIL("invalid escape sequence");
                                char u[4];
                                size_t w = encode_rune(v, u);
                                if (w == 1)
                                        re_literal(&b, u[0]);
                                else
                                        re_put(&b, u, w);
                        } else if ((unsigned char) e < 0x80 && !((e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') ||
                                                                 (e >= 'A' && e <= 'Z')))
                                re_literal(&b, e);
                        else
                                FAIL("invalid escape sequence"); /* back-references, \pL, \Q... */
                        if (e == 'A' || e == 'z' || e == 'b' || e == 'B')
                                ANCHOR();
                        else
                                ATOM();
                        continue;
                }
                default:
                        re_putc(&b, c);
                        i++;
                        ATOM();
                        continue;
                }
        }
#undef FAIL
#undef ATOM
#undef ANCHOR
        if (depth != 0 || b.overflow) {
                free(b.out);
                *why = b.overflow ? "expression too large" : "missing closing )";
                return NULL;
        }
        b.out[b.o] = 0;
        return b.out;
}

/* Compiles sel's regexp. A regexp that does not compile is not an error (it
 * matches nothing, as in containerd); running out of memory is. */
static int compile_regexp(selector *sel) {
        if (memchr(sel->value, 0, sel->value_len)) {
                log_debug("filter regexp holds a NUL: matches nothing");
                return 0;
        }
        int cflags = REG_EXTENDED | REG_NOSUB;
        const char *why = NULL;
        _cleanup_free_ char *ere = re2_to_ere(sel->value, sel->value_len, &cflags, &why);
        if (!ere) {
                if (!why)
                        return -ENOMEM;
                log_debug("error compiling filter regexp \"%s\": %s: matches nothing", sel->value, why);
                return 0;
        }
        int rc = regcomp(&sel->re, ere, cflags);
        if (rc == REG_ESPACE)
                return -ENOMEM;
        if (rc != 0) {
                char buf[128];
                regerror(rc, &sel->re, buf, sizeof(buf));
                log_debug("error compiling filter regexp \"%s\": %s: matches nothing", sel->value, buf);
                return 0;
        }
        sel->re_ok = true;
        return 0;
}

static int parse_selector(parser *p, selector *sel) {
        int r = parse_fieldpath(p, sel);
        if (r < 0)
                return r;
        int32_t pk = scan_peek(&p->sc);
        if (pk == ',' || pk == TOK_SEPARATOR || pk == TOK_EOF) {
                sel->op = OP_PRESENT;
                return 0;
        }

        size_t pos, end;
        int32_t tok = scan(&p->sc, &pos, &end);
        if (tok == TOK_OPERATOR) {
                size_t n = end - pos;
                const char *o = p->sc.in + pos;
                if (n == 2 && memcmp(o, "==", 2) == 0)
                        sel->op = OP_EQUAL;
                else if (n == 2 && memcmp(o, "!=", 2) == 0)
                        sel->op = OP_NOT_EQUAL;
                else if (n == 2 && memcmp(o, "~=", 2) == 0)
                        sel->op = OP_MATCHES;
                else
                        return mkerr(p, pos, "unsupported operator \"%.*s\"", (int) n, o);
        } else if (tok == TOK_ILLEGAL)
                return mkerr(p, pos, "%s", p->sc.err ? p->sc.err : "illegal token");
        else
                return mkerr(p, pos, "expected an operator (\"==\"|\"!=\"|\"~=\")");

        tok = scan(&p->sc, &pos, &end);
        switch (tok) {
        case TOK_VALUE:
        case TOK_FIELD:
                sel->value = strndup(p->sc.in + pos, end - pos);
                if (!sel->value)
                        return -ENOMEM;
                sel->value_len = end - pos;
                break;
        case TOK_QUOTED:
                r = parse_unquote(p, pos, end, sel->op == OP_MATCHES, &sel->value, &sel->value_len);
                if (r < 0)
                        return r;
                break;
        case TOK_ILLEGAL:
                return mkerr(p, pos, "%s", p->sc.err ? p->sc.err : "illegal token");
        default:
                return mkerr(p, pos, "expected value or quoted");
        }
        if (sel->op == OP_MATCHES)
                return compile_regexp(sel);
        return 0;
}

static int parse_selectors(parser *p, conj *c) {
        for (;;) {
                selector *ns = realloc(c->sel, (c->n + 1) * sizeof(selector));
                if (!ns)
                        return -ENOMEM;
                c->sel = ns;
                c->sel[c->n] = (selector){};
                int r = parse_selector(p, &c->sel[c->n]);
                c->n++; /* owned by c now, also on failure */
                if (r < 0)
                        return r;

                int32_t tok = scan_peek(&p->sc);
                if (tok == TOK_EOF)
                        return 0;
                if (tok == ',') {
                        size_t pos, end;
                        if (scan(&p->sc, &pos, &end) != TOK_SEPARATOR)
                                return mkerr(p, pos, "expected a separator");
                        continue;
                }
                char u[4];
                size_t w = encode_rune(tok < 0 ? RUNE_ERROR : tok, u);
                return mkerr(p, p->sc.ppos, "unexpected input: %.*s", (int) w, u);
        }
}

static int parse_one(const char *s, size_t len, conj *ret, ts_error **err) {
        conj c = {};
        if (len == 0) {
                *ret = c;
                return 0;
        }
        parser p = { .sc = { .in = s, .len = len }, .err = err };
        int r = parse_selectors(&p, &c);
        if (r < 0) {
                conj_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

int ts_filter_parse_len(const char *s, size_t len, ts_filter **ret, ts_error **err) {
        ts_filter *f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->alts = calloc(1, sizeof(conj));
        if (!f->alts) {
                free(f);
                return -ENOMEM;
        }
        int r = parse_one(s, len, &f->alts[0], err);
        if (r < 0) {
                free(f->alts);
                free(f);
                return r;
        }
        f->n = 1;
        *ret = f;
        return 0;
}

int ts_filter_parse(const char *s, ts_filter **ret, ts_error **err) {
        return ts_filter_parse_len(s ? s : "", s ? strlen(s) : 0, ret, err);
}

int ts_filter_parse_all(const char *const *ss, size_t n, ts_filter **ret, ts_error **err) {
        _cleanup_filter_ ts_filter *f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        if (n > 0) {
                f->alts = calloc(n, sizeof(conj));
                if (!f->alts)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const char *s = ss[i] ? ss[i] : "";
                int r = parse_one(s, strlen(s), &f->alts[i], err);
                if (r < 0)
                        return r;
                f->n = i + 1;
        }
        *ret = TAKE_PTR(f);
        return 0;
}

static bool selector_match(const selector *sel, ts_filter_field_fn fn, void *userdata) {
        const char *v = NULL;
        size_t vl = 0;
        bool present = fn((const char *const *) sel->fieldpath, sel->n_fields, userdata, &v, &vl);
        if (!present || !v) {
                v = "";
                vl = 0;
        }
        switch (sel->op) {
        case OP_PRESENT:
                return present;
        case OP_EQUAL:
                return present && vl == sel->value_len && memcmp(v, sel->value, vl) == 0;
        case OP_NOT_EQUAL:
                return !(vl == sel->value_len && memcmp(v, sel->value, vl) == 0);
        case OP_MATCHES: {
                if (!sel->re_ok)
                        return false;
                /* the adaptor's value need not be NUL-terminated */
                _cleanup_free_ char *copy = strndup(v, vl);
                return copy && regexec(&sel->re, copy, 0, NULL, 0) == 0;
        }
        }
        return false;
}

bool ts_filter_match(const ts_filter *f, ts_filter_field_fn fn, void *userdata) {
        if (f->n == 0)
                return true;
        for (size_t i = 0; i < f->n; i++) {
                const conj *c = &f->alts[i];
                bool all = true;
                for (size_t j = 0; j < c->n && all; j++)
                        all = selector_match(&c->sel[j], fn, userdata);
                if (all)
                        return true;
        }
        return false;
}
