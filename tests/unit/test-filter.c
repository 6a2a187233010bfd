/* containerd filter syntax: containerd 1.6's own filters tests (filter_test.go)
 * taken as facts, plus the snapshot adaptor and Go's regexp answers. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/filter.h"
#include "plugin/snapfilter.h"
#include "tests/unit/failalloc.h"
#include "tests/unit/ts-check.h"

/* containerd's test corpus: name, other, labels */
typedef struct entry {
        const char *name;
        const char *other;
        const char *labels[3][2];
} entry;

static const entry corpus[] = {
        { "foo", NULL, { { "foo", "true" } } },
        { "bar", NULL, { { NULL } } },
        { "foo", NULL, { { "foo", "present" }, { "more complex label", "present" } } },
        { "bar", NULL, { { "bar", "true" } } },
        { "fooer", NULL, { { "more complex label with \\ and \"", "present" } } },
        { "fooer", NULL, { { "more complex label with \\ and \".post", "present" } } },
        { "baz", "too complex, yo", { { NULL } } },
        { "bazo", "abc", { { NULL } } },
        { "compound", NULL, { { "foo", "omg_asdf.asdf-qwer" } } },
};
#define N_CORPUS (sizeof(corpus) / sizeof(corpus[0]))

static bool adapt(const char *const *fp, size_t n, void *userdata, const char **ret, size_t *ret_len) {
        const entry *e = userdata;
        const char *v = NULL;
        if (strcmp(fp[0], "name") == 0)
                v = e->name && *e->name ? e->name : NULL;
        else if (strcmp(fp[0], "other") == 0)
                v = e->other && *e->other ? e->other : NULL;
        else if (strcmp(fp[0], "labels") == 0) {
                char key[256] = "";
                for (size_t i = 1; i < n; i++) {
                        if (i > 1)
                                strcat(key, ".");
                        strcat(key, fp[i]);
                }
                for (int i = 0; i < 3 && e->labels[i][0]; i++)
                        if (strcmp(e->labels[i][0], key) == 0)
                                v = e->labels[i][1];
        }
        if (!v)
                return false;
        *ret = v;
        *ret_len = strlen(v);
        return true;
}

/* Returns a bitmask of the corpus entries that input selects. */
static unsigned run(const char *input) {
        ts_filter *f = NULL;
        ts_error *err = NULL;
        int r = ts_filter_parse(input, &f, &err);
        ck_assert_msg(r == 0, "%s: %s", input, ts_error_message(err, r));
        unsigned mask = 0;
        for (size_t i = 0; i < N_CORPUS; i++)
                if (ts_filter_match(f, adapt, (void *) &corpus[i]))
                        mask |= 1u << i;
        ts_filter_free(f);
        return mask;
}

#define B(i) (1u << (i))
#define ALL ((1u << N_CORPUS) - 1)

START_TEST(containerd_matching) {
        ck_assert_uint_eq(run(""), ALL);
        ck_assert_uint_eq(run("name"), ALL);
        ck_assert_uint_eq(run("labels.foo"), B(0) | B(2) | B(8));
        ck_assert_uint_eq(run("labels.foo,name"), B(0) | B(2) | B(8));
        ck_assert_uint_eq(run("labels.foo==true"), B(0));
        ck_assert_uint_eq(run("labels.foo==omg_asdf.asdf-qwer"), B(8));
        ck_assert_uint_eq(run("name==bar"), B(1) | B(3));
        ck_assert_uint_eq(run("name!=bar"), B(0) | B(2) | B(4) | B(5) | B(6) | B(7) | B(8));
        ck_assert_uint_eq(run("name==bar,labels.bar"), B(3));
        ck_assert_uint_eq(run("other==\"too complex, yo\""), B(6));
        ck_assert_uint_eq(run("other~=[abc]+,name!=foo"), B(6) | B(7));
        ck_assert_uint_eq(run("other~=/[abc]+/,name!=foo"), B(6) | B(7));
        ck_assert_uint_eq(run("other~=/[abc]{1,2}/,name!=foo"), B(6) | B(7));
        ck_assert_uint_eq(run("other~=/[abc]{0,1}\"\\//,name!=foo"), 0);
        ck_assert_uint_eq(run("name==bar,labels.bar==true"), B(3));
        ck_assert_uint_eq(run("name==bar,labels.bar==wrong"), 0);
        ck_assert_uint_eq(run("name==foo,labels.\"more complex label\""), B(2));
        ck_assert_uint_eq(run("labels.\"more complex label with \\\\ and \\\"\"==present"), B(4));
        ck_assert_uint_eq(run("labels.\"more complex label with \\\\ and \\\"\".post==present"), B(5));
}
END_TEST

static void expect_error(const char *input, const char *msg) {
        ts_filter *f = (ts_filter *) 0x1;
        ts_error *err = NULL;
        int r = ts_filter_parse(input, &f, &err);
        ck_assert_int_eq(r, -EINVAL);
        ck_assert_ptr_eq(f, (ts_filter *) 0x1); /* untouched on failure */
        ck_assert_ptr_nonnull(err);
        ck_assert_str_eq(err->msg, msg);
        ts_error_free(err);
}

START_TEST(containerd_errors) {
        expect_error("labels.|foo|==omg_asdf.asdf-qwer",
                     "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered");
        expect_error("labels.?\"more complex label with \\\\ and \\\"\".post==present",
                     "filters: parse error: [labels. >|?|< \"more complex label with \\\\ and \\\"\".post==present]: "
                     "expected field or quoted");
        expect_error("name==foo,", "filters: parse error: [name==foo,]: expected field or quoted");
        expect_error("labels.", "filters: parse error: [labels.]: expected field or quoted");
        expect_error("image~=,id?=?fbaq", "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted");
        expect_error("labels.ns/key==value",
                     "filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated");
        expect_error("labels.key==/value",
                     "filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated");
}
END_TEST

START_TEST(more_errors) {
        /* derived from the grammar and scanner rules */
        expect_error("name=bar", "filters: parse error: [name >|=|< bar]: unsupported operator \"=\"");
        expect_error("name===bar", "filters: parse error: [name >|=|< ==bar]: unsupported operator \"===\"");
        /* the space is skipped; the error is at the next token */
        expect_error("name bar", "filters: parse error: [name  >|b|< ar]: expected an operator (\"==\"|\"!=\"|\"~=\")");
        expect_error("name==bar baz", "filters: parse error: [name==bar >| |< baz]: unexpected input:  ");
        expect_error("name==\"a\\qb\"", "filters: parse error: [name== >|\"|< a\\qb\"]: illegal escape sequence");
        expect_error("name==\"\\x4\"", "filters: parse error: [name== >|\"|< \\x4\"]: illegal numeric escape sequence");
        expect_error("name==\"\\777\"",
                     "filters: parse error: [name== >|\"|< \\777\"]: unquoting failed: quote syntax error");
        expect_error("name==\"\\U00110000\"",
                     "filters: parse error: [name== >|\"|< \\U00110000\"]: unquoting failed: quote syntax error");
        expect_error("name==|bar|", "filters: parse error: [name== >|||< bar|]: invalid quote encountered");
        expect_error("name==\"bar", "filters: parse error: [name== >|\"|< bar]: quoted literal not terminated");
        expect_error("na\xffme", "filters: parse error: [na >|\xff|< me]: rune error");
        expect_error(",", "filters: parse error: [ >|,|< ]: expected field or quoted");
        expect_error("name==", "filters: parse error: [name==]: expected value or quoted");
        /* an unassigned code point (U+DE208) is not graphic in Go: it ends the value */
        expect_error("name==lab\xf3\x9e\x88\x88",
                     "filters: parse error: [name==lab >|\xf3|< \x9e\x88\x88]: unexpected input: \xf3\x9e\x88\x88");

        ts_filter *f = NULL;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_filter_parse_len("\0name", 5, &f, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "unexpected null"));
        ts_error_free(err);
        err = NULL;
        /* after a value the NUL ends the run and is unexpected input, as in containerd */
        ck_assert_int_eq(ts_filter_parse_len("name==a\0b", 9, &f, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "unexpected input: \xef\xbf\xbd"));
        ts_error_free(err);
}
END_TEST

static bool one_value(const char *input, const char *value) {
        entry e = { .name = value };
        ts_filter *f = NULL;
        ts_error *err = NULL;
        int r = ts_filter_parse(input, &f, &err);
        ck_assert_msg(r == 0, "%s: %s", input, ts_error_message(err, r));
        bool m = ts_filter_match(f, adapt, &e);
        ts_filter_free(f);
        return m;
}

START_TEST(escapes_and_spaces) {
        ck_assert(one_value("name==\"\\x41\\101\\u00e9\\U0001F600\"", "AA\xc3\xa9\xf0\x9f\x98\x80"));
        ck_assert(one_value("name==\"tab\\there\"", "tab\there"));
        ck_assert(one_value("name==\"q\\\"q\"", "q\"q"));
        ck_assert(one_value("name~=/a\\/b/", "xa/by"));
        ck_assert(one_value("name~=|a\\|b|", "a|b"));
        ck_assert(one_value(" name == bar", "bar")); /* spaces before tokens are skipped */
        ck_assert(one_value("name==ba.r-1:2/3", "ba.r-1:2/3"));
        ck_assert(one_value("name==caf\xc3\xa9", "caf\xc3\xa9"));
        ck_assert(!one_value("name==bar", "barx"));
        ck_assert(one_value("name==\"\"", "") == false); /* the test adaptor reports "" as absent */
        ck_assert(!one_value("name!=\"\"", ""));          /* absent reads as "" for != */
        ck_assert(one_value("name!=x", ""));
        ck_assert(!one_value("name!=x", "x"));
        /* containerd's int32 wrap: \U with a high first digit appends its low byte */
        ck_assert(one_value("name==\"\\UFFFFFFFF\"", "\xff"));
        ck_assert(one_value("name==\"a\\U8000004142\"", "aA42"));
        /* a letter outside ASCII is part of the value */
        ck_assert(one_value("name==\xce\xbb\xe6\x97\xa5", "\xce\xbb\xe6\x97\xa5"));
}
END_TEST

START_TEST(regexp_re2_spellings) {
        ck_assert(one_value("name~=^sha256:[0-9a-f]+$", "sha256:0a1b"));
        ck_assert(!one_value("name~=^sha256:[0-9a-f]+$", "sha256:0a1bZ"));
        ck_assert(one_value("name~=\\d+", "abc123"));
        ck_assert(!one_value("name~=\\d", "abc"));
        ck_assert(one_value("name~=^\\D+$", "abc"));
        ck_assert(one_value("name~=^[\\d.]+$", "1.2.3"));
        ck_assert(one_value("name~=(?i)^ABC", "abcdef"));
        ck_assert(!one_value("name~=^ABC", "abcdef"));
        ck_assert(one_value("name~=^(?:ab)+$", "abab"));
        ck_assert(one_value("name~=\\Aab\\z", "ab"));
        ck_assert(one_value("name~=\\w+\\s\\w+", "hello world"));
        ck_assert(one_value("name~=[[:digit:]]", "a1"));
        /* an invalid regexp parses and matches nothing, as containerd */
        ck_assert(!one_value("name~=/[/", "["));
        ck_assert(!one_value("name~=(", "("));
        /* what Go's regexp/syntax rejects parses here too and matches nothing */
        ck_assert(!one_value("name~=a**", "aaa"));
        ck_assert(!one_value("name~=x+++", "xxx"));
        ck_assert(!one_value("name~=a{1001}", "a"));
        ck_assert(!one_value("name~=/a{2,1}/", "aa"));
        ck_assert(!one_value("name~=(a)\\1", "aa")); /* no back-references in RE2 */
        ck_assert(!one_value("name~=*a", "a"));
        ck_assert(!one_value("name~=((a{100}){100}){100}", "a"));  /* Go: over 1000 nested repeats */
        ck_assert(one_value("name~=^(a{10}){10}$", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
        ck_assert(one_value("name~=^a+?b*?c??$", "aab")); /* lazy forms */
        ck_assert(one_value("name~=/a{,/", "xa{,"));          /* not a repeat: literal, as RE2 */
        ck_assert(one_value("name~=^[\\]\\-]+$", "]-]"));  /* RE2 escapes inside a bracket */
        ck_assert(one_value("name~=^[\\w.]+$", "a_b.c"));
        ck_assert(one_value("name~=^(?P<n>x)y$", "xy"));
        ck_assert(one_value("name~=^\\x41\\.$", "A."));
        ck_assert(!one_value("name~=^\\x41\\.$", "Ab"));
        ck_assert(one_value("name~=a.b", "axb"));
        ck_assert(!one_value("name~=a.b", "a\nb")); /* RE2's . does not match a newline */
        ck_assert(one_value("name~=(?s)a.b", "a\nb"));
        ck_assert(one_value("name~=a\\nb", "a\nb"));
        /* fuzzer finds: stacked repeats, many "[" inside a bracket */
        ck_assert(!one_value("x~=x~++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++=b", "x"));
        ck_assert(one_value("name~=^[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[=x]+$", "[=x["));
        ck_assert(!one_value("me~=(zSHd+me~[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[=(zSHd+", "x"));
        /* unanchored search; absent field reads as "" */
        ck_assert(one_value("name~=b", "abc"));
        ck_assert(one_value("other~=^$", "x"));
}
END_TEST

START_TEST(any_of_strings) {
        const char *ss[] = { "name==bar", "labels.foo==true" };
        ts_filter *f = NULL;
        ck_assert_int_eq(ts_filter_parse_all(ss, 2, &f, NULL), 0);
        unsigned mask = 0;
        for (size_t i = 0; i < N_CORPUS; i++)
                if (ts_filter_match(f, adapt, (void *) &corpus[i]))
                        mask |= 1u << i;
        ck_assert_uint_eq(mask, B(0) | B(1) | B(3));
        ts_filter_free(f);

        ck_assert_int_eq(ts_filter_parse_all(NULL, 0, &f, NULL), 0);
        for (size_t i = 0; i < N_CORPUS; i++)
                ck_assert(ts_filter_match(f, adapt, (void *) &corpus[i]));
        ts_filter_free(f);

        const char *with_empty[] = { "name==nothing", "" };
        ck_assert_int_eq(ts_filter_parse_all(with_empty, 2, &f, NULL), 0);
        for (size_t i = 0; i < N_CORPUS; i++)
                ck_assert(ts_filter_match(f, adapt, (void *) &corpus[i]));
        ts_filter_free(f);

        const char *bad[] = { "name==bar", "name==" };
        ts_error *err = NULL;
        f = NULL;
        ck_assert_int_eq(ts_filter_parse_all(bad, 2, &f, &err), -EINVAL);
        ck_assert_ptr_null(f);
        ck_assert_str_eq(err->msg, "filters: parse error: [name==]: expected value or quoted");
        ts_error_free(err);
}
END_TEST

static bool snap_match(const char *input, const ts_store_info *info) {
        ts_filter *f = NULL;
        ts_error *err = NULL;
        int r = ts_filter_parse(input, &f, &err);
        ck_assert_msg(r == 0, "%s: %s", input, ts_error_message(err, r));
        bool m = ts_filter_match(f, ts_snapfilter_field, (void *) info);
        ts_filter_free(f);
        return m;
}

START_TEST(snapshot_adaptor) {
        /* sorted by key, as records hold them */
        ts_label l[] = { { (char *) "a.b", (char *) "1" }, { (char *) "containerd.io/gc.root", (char *) "x" } };
        ts_store_info committed = { .name = (char *) "sha256:abc", .parent = (char *) "", .kind = TS_KIND_COMMITTED,
                                    .labels = l, .n_labels = 2 };
        ts_store_info active = { .name = (char *) "default/3/extract", .parent = (char *) "sha256:abc",
                                 .kind = TS_KIND_ACTIVE };
        ck_assert(snap_match("kind==committed", &committed));
        ck_assert(!snap_match("kind==committed", &active));
        ck_assert(snap_match("kind==active,parent==sha256:abc", &active));
        ck_assert(snap_match("parent", &committed)); /* parent is always present */
        ck_assert(snap_match("parent==\"\"", &committed));
        ck_assert(snap_match("labels.\"containerd.io/gc.root\"", &committed));
        ck_assert(snap_match("labels.a.b==1", &committed)); /* path joined with "." */
        ck_assert(!snap_match("labels.a", &committed));
        ck_assert(!snap_match("labels.a", &active));
        ck_assert(snap_match("name~=^default/", &active));
        ck_assert(!snap_match("unknown", &active));
        ck_assert(snap_match("unknown!=x", &active));
}
END_TEST

/* Regexps against Go 1.19's regexp package: the expected values are what Go's
 * regexp.MatchString answered (a compile error counts as no match), recorded
 * once with golang-go on this machine. */
static const struct {
        const char *re, *subject;
        bool go;
} go_regexp_facts[] = {
        { "^sha256:[0-9a-f]+$", "sha256:0a1b", true },
        { "^sha256:[0-9a-f]+$", "sha256:0A1B", false },
        { "(?i)^sha256:[0-9a-f]+$", "sha256:0A1B", true },
        { "\\d+", "abc123", true },
        { "\\d+", "abc", false },
        { "^\\D+$", "abc", true },
        { "^[\\d.]+$", "1.2.3", true },
        { "^[\\w.-]+$", "a_b.c-d", true },
        { "^[\\w.-]+$", "a b", false },
        { "a.b", "axb", true },
        { "a.b", "a\nb", false },
        { "(?s)a.b", "a\nb", true },
        { "^a+?b*?c??$", "aab", true },
        { "a{,", "xa{,", true },
        { "a{2,1}", "aa", false },
        { "a**", "aaa", false },
        { "x+++", "xxx", false },
        { "(a)\\1", "aa", false },
        { "*a", "a", false },
        { "^*", "x", true },
        { "^+x", "x", true },
        { "$*", "x", true },
        { "\\b*x", "x", true },
        { "\\bfoo\\b", "a foo b", true },
        { "\\bfoo\\b", "afoob", false },
        { "\\Bfoo", "afoo", true },
        { "[@-a-f]", "-", true },
        { "[@-a-f]", "f", true },
        { "[@-a-f]", "b", false },
        { "[a-]", "-", true },
        { "[-a]", "-", true },
        { "[]a]", "]", true },
        { "[^]a]", "b", true },
        { "[^]a]", "]", false },
        { "[\\]\\-]+", "]-]", true },
        { "[\\[]", "[", true },
        { "\\[", "[", true },
        { "\\{", "{", true },
        { "a{2}", "aa", true },
        { "a{2}", "a", false },
        { "a{2,}", "aaa", true },
        { "a{0}b", "b", true },
        { "a{0,0}b", "b", true },
        { "x{1001}", "x", false },
        { "((a{10}){10}){11}", "a", false },
        { "(a|b)*c", "ababc", true },
        { "(?:ab)+", "abab", true },
        { "(?P<x>ab)+", "abab", true },
        { "\\x41", "A", true },
        { "\\x{263a}", "☺", true },
        { "\\x{41}", "A", true },
        { "^$", "", true },
        { "^$", "x", false },
        { "a|", "b", true },
        { "|a", "b", true },
        { "()", "x", true },
        { "(|a)", "b", true },
        { "\\n", "a\nb", true },
        { "\\t", "a\tb", true },
        { "[[:alpha:]]+", "abc", true },
        { "[[:word:]]", "a", true },
        { "\\.", "a.b", true },
        { "\\.", "ab", false },
        { "a\\+", "a+", true },
        { "a\\*", "aa", false },
        { "[.]", "x", false },
        { "[.]", ".", true },
        { "[a.c]", "b", false },
        { "[=a=]", "=", true },
        { "[a-z&&[^b]]", "&", false },
        { "\\z", "x", true },
        { "\\Ax", "x", true },
        { "x\\z", "x", true },
        { "x$", "x\n", false },
        { "(a)(b)\\2", "abb", false },
        { "\\8", "8", false },
        { "\\0", "x", false },
        { "\\01", "x", false },
        { "\\a", "x", false },
        { "[\\d-z]", "-", true },
        { "[a-\\d]", "-", false },
        { "ab|cd|", "x", true },
        { "é", "café", true },
        { "[é]", "é", true },
        { "\\s", "a b", true },
        { "\\S+", "ab", true },
        { "[^\\s]", "a", true },
        { "[\\s]", "\n", true },
        { "\\W", "!", true },
        { "a{1,1001}", "a", false },
        { "a{1000}", "a", false },
        { "(a{1000}){2}", "a", false },
        { "a++", "a", false },
        { "a*?", "a", true },
        { "a??", "a", true },
        { "a+*", "a", false },
        { ")", "x", false },
        { "(", "x", false },
        { "[a", "x", false },
        { "a]", "a]", true },
        { "a}", "a}", true },
        { "{", "{", true },
        { "x{", "x{", true },
        { "x{1", "x{1", true },
        { "x{1,", "x{1,", true },
        { "x{,1}", "x{,1}", true },
        { "\\x{0000000041}", "A", true },
        { "\\x{110000}", "x", false },
        { "\\x{FFFFFFFFF}", "x", false },
        { "\\x{}", "x", false },
        /* flags, Unicode classes, quoting, and what Perl has and Go rejects */
        { "(?i:ABC)d", "abcd", true },
        { "(?i:ABC)D", "abcd", false },
        { "(?m)^b$", "a\nb\nc", true },
        { "^b$", "a\nb\nc", false },
        { "(?U)a+", "aaa", true },
        { "\\pL+", "é", true },
        { "^\\pL$", "1", false },
        { "\\p{Greek}", "αβ", true },
        { "\\PL", "ab", false },
        { "^\\p{^Greek}$", "a", true },
        { "\\Qa.b\\E", "a.b", true },
        { "\\Qa.b\\E", "axb", false },
        { "[[:^alpha:]]", "ab", false },
        { "[[:^alpha:]]", "a1", true },
        { "^.$", "é", true },
        { "^..$", "é", false },
        { "\\C", "a", false },
        { "\\Q\\C\\E", "\\C", true },
        { "(?i)k", "K", true },
        { "(?i)ſ", "S", true },
        { "a\\z", "a\n", false },
        { "(?m)^$", "a\n", true },
        { "(?m)a$", "a\nb", true },
        { "(?s).", "\n", true },
        { "\\v", "\v", true },
        { "\\s", "\v", false },
        { "(?=a)", "a", false },
        { "(?!a)", "b", false },
        { "(?<=a)b", "ab", false },
        { "(?>a)", "a", false },
        { "a*+", "a", false },
        { "\\e", "\x1b", false },
        { "\\cA", "\x01", false },
        { "\\h", " ", false },
        { "\\R", "\n", false },
        { "\\K", "a", false },
        { "\\G", "a", false },
        { "\\N", "a", false },
        { "\\X", "a", false },
        { "(?#c)a", "a", false },
        { "(?P=n)", "a", false },
        { "(?<n>a)", "a", false },
        { "\\g1", "a", false },
        { "(?x)a b", "ab", false },
        { "\\Z", "a", false },
        { "\\x4", "\x04", false },
        { "\\12", "\n", true },
        { "\\012", "\n", true },
        { "(*UTF)a", "a", false },
        { "(?i)é", "É", true },
        { "[\\p{Lu}]", "A", true },
        { "\\pN", "٣", true },
        { "[^\\x00-\\x{10FFFF}]", "a", false },
        { "a{2}{3}", "aaaaaa", false },
        { "(?i)[k]", "K", true },
};

static bool subject_adaptor(const char *const *fp, size_t n, void *ud, const char **v, size_t *l) {
        *v = ud;
        *l = strlen(ud);
        return true;
}

START_TEST(regexp_as_go) {
        for (size_t i = 0; i < sizeof(go_regexp_facts) / sizeof(go_regexp_facts[0]); i++) {
                char f[512];
                size_t k = (size_t) snprintf(f, sizeof(f), "x~=\"");
                for (const char *p = go_regexp_facts[i].re; *p; p++) {
                        if (*p == '\\' || *p == '"')
                                f[k++] = '\\';
                        f[k++] = *p;
                }
                f[k++] = '"';
                f[k] = 0;
                ts_filter *flt = NULL;
                ts_error *err = NULL;
                int r = ts_filter_parse(f, &flt, &err);
                ck_assert_msg(r == 0, "%s: %s", f, ts_error_message(err, r));
                bool m = ts_filter_match(flt, subject_adaptor, (void *) go_regexp_facts[i].subject);
                ck_assert_msg(m == go_regexp_facts[i].go, "regexp %s on \"%s\": %d, Go says %d",
                              go_regexp_facts[i].re, go_regexp_facts[i].subject, m, go_regexp_facts[i].go);
                ts_filter_free(flt);
        }
}
END_TEST

/* Matching is linear in the label: patterns that make a backtracking matcher take
 * exponential or quadratic time answer on a 200 KB label, and answer right. */
START_TEST(pathological_regexps) {
        size_t n = 200 * 1024;
        char *label = malloc(n + 1);
        ck_assert_ptr_nonnull(label);
        memset(label, 'a', n);
        label[n] = 0;
        static const struct {
                const char *filter;
                bool match;
        } cases[] = {
                { "x~=\"(a|aa)*c\"", false },   { "x~=\"(a*)*b\"", false },
                { "x~=\"(a+a+)+b\"", false },   { "x~=\"^(a|a?)+$\"", true },
                { "x~=\"(.*a){20}b\"", false }, { "x~=\"a.*a.*a.*b\"", false },
                { "x~=\"(a|aa)*$\"", true },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                ts_filter *f = NULL;
                ts_error *err = NULL;
                int r = ts_filter_parse(cases[i].filter, &f, &err);
                ck_assert_msg(r == 0, "%s: %s", cases[i].filter, ts_error_message(err, r));
                ck_assert_msg(ts_filter_match(f, subject_adaptor, label) == cases[i].match, "%s", cases[i].filter);
                ts_filter_free(f);
        }
        free(label);
}
END_TEST

/* Parses the n strings ss and expects -E2BIG with a message naming limit. */
static void assert_over_limit(const char *const *ss, size_t n, const char *limit) {
        ts_filter *f = NULL;
        ts_error *err = NULL;
        int r = ts_filter_parse_all(ss, n, &f, &err);
        ck_assert_int_eq(r, -E2BIG);
        ck_assert_ptr_null(f);
        ck_assert_msg(strstr(ts_error_message(err, r), limit), "%s", ts_error_message(err, r));
        ts_error_free(err);
}

static void assert_parses(const char *const *ss, size_t n) {
        ts_filter *f = NULL;
        ts_error *err = NULL;
        int r = ts_filter_parse_all(ss, n, &f, &err);
        ck_assert_msg(r == 0, "%s", ts_error_message(err, r));
        ts_filter_free(f);
}

/* "name==aaa...": a filter of exactly len bytes. */
static char *filter_of_len(size_t len) {
        char *s = malloc(len + 1);
        ck_assert_ptr_nonnull(s);
        memcpy(s, "name==", 6);
        memset(s + 6, 'a', len - 6);
        s[len] = 0;
        return s;
}

/* "a,a,...": a filter of n selectors. */
static char *filter_of_selectors(size_t n) {
        char *s = malloc(2 * n);
        ck_assert_ptr_nonnull(s);
        for (size_t i = 0; i < n; i++) {
                s[2 * i] = 'a';
                s[2 * i + 1] = ',';
        }
        s[2 * n - 1] = 0;
        return s;
}

START_TEST(limits) {
        char *at = filter_of_len(TS_FILTER_MAX_LEN), *over = filter_of_len(TS_FILTER_MAX_LEN + 1);
        assert_parses((const char *const[]) { at }, 1);
        assert_over_limit((const char *const[]) { over }, 1, "over the limit of 4096 bytes");
        ts_filter *f = NULL;
        ck_assert_int_eq(ts_filter_parse_len(over, strlen(over), &f, NULL), -E2BIG);
        free(at);
        free(over);

        char *sel = filter_of_selectors(TS_FILTER_MAX_SELECTORS), *more = filter_of_selectors(TS_FILTER_MAX_SELECTORS + 1);
        assert_parses((const char *const[]) { sel }, 1);
        assert_over_limit((const char *const[]) { more }, 1, "more than 64 selectors");
        /* the bound is on the request: selectors of all its strings count */
        assert_over_limit((const char *const[]) { sel, "name==x" }, 2, "more than 64 selectors");
        free(sel);
        free(more);

        const char *ss[TS_FILTER_MAX_STRINGS + 1];
        for (size_t i = 0; i <= TS_FILTER_MAX_STRINGS; i++)
                ss[i] = "";
        assert_parses(ss, TS_FILTER_MAX_STRINGS);
        assert_over_limit(ss, TS_FILTER_MAX_STRINGS + 1, "65 filters, over the limit of 64");

        /* a regexp whose program would pass 1 MiB; Go's own size bound is far larger */
        assert_parses((const char *const[]) { "x~=\\pL{10}" }, 1);
        assert_over_limit((const char *const[]) { "x~=\\pL{200}" }, 1, "more than 1024 KiB");
}
END_TEST

/* Every allocation in parse and match may fail: the result is -ENOMEM (or a
 * clean success), never a crash or a leak (LeakSanitizer fails the test). */
START_TEST(allocation_failures) {
        const char *ss[] = { "labels.\"a b\"==\"x\\ty\",name~=/(?i)^a[\\\\d\\\\w]+$/,kind!=view,parent",
                             "name==x,labels.k.l~=\\d{2}" };
        ts_label l[] = { { (char *) "a b", (char *) "x\ty" } };
        ts_store_info info = { .name = (char *) "A12", .parent = (char *) "", .kind = TS_KIND_ACTIVE,
                               .labels = l, .n_labels = 1 };
        unsigned long n;
        for (n = 1; n < 10000; n++) {
                ts_filter *f = NULL;
                ts_error *err = NULL;
                ts_failalloc_arm(n);
                int r = ts_filter_parse_all(ss, 2, &f, &err);
                bool m = r == 0 && ts_filter_match(f, ts_snapfilter_field, &info);
                int fired = ts_failalloc_fired();
                ts_failalloc_arm(0);
                ck_assert_msg(r == 0 || r == -ENOMEM, "allocation %lu: %d", n, r);
                if (!fired) {
                        ck_assert_int_eq(r, 0);
                        ck_assert(m);
                }
                ts_filter_free(f);
                ts_error_free(err);
                if (!fired)
                        break;
        }
        ck_assert_uint_gt(n, 10); /* the injection reached the parser's allocations */
        ck_assert_uint_lt(n, 10000);
}
END_TEST

int main(void) {
        Suite *s = suite_create("filter");
        TCase *tc = tcase_create("filter");
        tcase_add_test(tc, containerd_matching);
        tcase_add_test(tc, containerd_errors);
        tcase_add_test(tc, more_errors);
        tcase_add_test(tc, escapes_and_spaces);
        tcase_add_test(tc, regexp_re2_spellings);
        tcase_add_test(tc, any_of_strings);
        tcase_add_test(tc, snapshot_adaptor);
        tcase_add_test(tc, regexp_as_go);
        tcase_add_test(tc, pathological_regexps);
        tcase_add_test(tc, limits);
        tcase_add_test(tc, allocation_failures);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
