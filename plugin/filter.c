#include "filter.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "regexp.h"

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
        ts_regexp *re; /* "~=" only; NULL when the regexp did not compile */
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
        ts_regexp_free(s->re);
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

/* containerd's isValueRune: letters, digits, numbers, graphic and punctuation
 * runes, but not spaces or ",". */
static bool is_value_rune(int32_t r) {
        if (r < 0x80)
                return r > ' ' && r < 0x7F && r != ',';
        if (r > MAX_RUNE || is_space(r))
                return false;
        char u[4];
        size_t n = encode_rune(r, u);
        return ts_regexp_is_graphic(u, n);
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
        size_t *n_selectors; /* in all the strings of one request */
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

/* Compiles sel's regexp. A regexp that Go would reject is not an error (it
 * matches nothing, as in containerd, which logs and answers false); one over our
 * size limit is, and so is running out of memory. */
static int compile_regexp(parser *p, selector *sel) {
        _cleanup_free_ char *why = NULL;
        int r = ts_regexp_compile(sel->value, sel->value_len, &sel->re, &why);
        if (r == -EINVAL) {
                log_debug("error compiling filter regexp \"%s\": %s: matches nothing", sel->value,
                          why ? why : "invalid");
                return 0;
        }
        if (r == -E2BIG)
                return ts_error_setf_plain(p->err, E2BIG,
                                           "filters: regexp \"%.*s\" compiles to more than %d KiB, over the limit",
                                           (int) sel->value_len, sel->value, TS_REGEXP_MAX_MEM / 1024);
        return r;
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
                return compile_regexp(p, sel);
        return 0;
}

static int parse_selectors(parser *p, conj *c) {
        for (;;) {
                if (*p->n_selectors >= TS_FILTER_MAX_SELECTORS)
                        return ts_error_setf_plain(p->err, E2BIG, "filters: more than %d selectors, over the limit",
                                                   TS_FILTER_MAX_SELECTORS);
                (*p->n_selectors)++;
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

static int parse_one(const char *s, size_t len, size_t *n_selectors, conj *ret, ts_error **err) {
        conj c = {};
        if (len > TS_FILTER_MAX_LEN)
                return ts_error_setf_plain(err, E2BIG, "filters: a filter of %zu bytes, over the limit of %d bytes",
                                           len, TS_FILTER_MAX_LEN);
        if (len == 0) {
                *ret = c;
                return 0;
        }
        parser p = { .sc = { .in = s, .len = len }, .n_selectors = n_selectors, .err = err };
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
        size_t n_selectors = 0;
        int r = parse_one(s, len, &n_selectors, &f->alts[0], err);
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
        if (n > TS_FILTER_MAX_STRINGS)
                return ts_error_setf_plain(err, E2BIG, "filters: %zu filters, over the limit of %d", n,
                                           TS_FILTER_MAX_STRINGS);
        _cleanup_filter_ ts_filter *f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        size_t n_selectors = 0;
        if (n > 0) {
                f->alts = calloc(n, sizeof(conj));
                if (!f->alts)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const char *s = ss[i] ? ss[i] : "";
                int r = parse_one(s, strlen(s), &n_selectors, &f->alts[i], err);
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
        case OP_MATCHES:
                return sel->re && ts_regexp_search(sel->re, v, vl);
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
