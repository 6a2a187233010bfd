/* containerd filter syntax: containerd 1.6's own filters tests (filter_test.go)
 * taken as facts, plus the snapshot adaptor and the RE2 -> ERE rewriting. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/filter.h"
#include "store/store.h"

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
        ck_assert(!one_value("name~=((a{100}){100}){100}", "a"));  /* glibc would copy 10^6 trees */
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
        /* the input that made glibc's regcomp exhaust memory under the fuzzer */
        ck_assert(!one_value("x~=x~++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++=b", "x"));
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
        ck_assert(!ts_filter_is_always(f));
        ts_filter_free(f);

        ck_assert_int_eq(ts_filter_parse_all(NULL, 0, &f, NULL), 0);
        ck_assert(ts_filter_is_always(f));
        ck_assert(ts_filter_match(f, adapt, (void *) &corpus[1]));
        ts_filter_free(f);

        const char *with_empty[] = { "name==nothing", "" };
        ck_assert_int_eq(ts_filter_parse_all(with_empty, 2, &f, NULL), 0);
        ck_assert(ts_filter_is_always(f));
        ck_assert(ts_filter_match(f, adapt, (void *) &corpus[1]));
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
        bool m = ts_filter_match(f, ts_store_info_field, (void *) info);
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
        suite_add_tcase(s, tc);
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
