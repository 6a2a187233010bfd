/* Fuzzes the guest path resolver and every operation that takes a guest
 * path, on a small image that holds the awkward shapes a hostile image can
 * have: symlink loops, links escaping upward and to absolute host-looking
 * paths, a file where a directory is expected, an entry pointing at a free
 * inode. Input: NUL-separated strings; the first byte of each picks the
 * operation. Invariant: nothing crashes or leaks, and whatever fails, the
 * handle can still be closed cleanly (every failure was rolled back). */
#include "fuzz-inject-common.h"

static char base_img[64], work_img[64];
static uint8_t *base;
static size_t base_len;

static void must(int r) {
        if (r < 0)
                abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
        snprintf(base_img, sizeof base_img, "/tmp/fuzz-inject-path-%d.base", (int) getpid());
        snprintf(work_img, sizeof work_img, "/tmp/fuzz-inject-path-%d.img", (int) getpid());
        unlink(base_img);
        if (fuzz_run((char *const[]){ "mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-b", "1024",
                                      "-N", "64", base_img, "1M", NULL }) != 0)
                abort();
        ts_inject *ij = NULL;
        ts_error *err = NULL;
        must(ts_inject_open(base_img, 0, &ij, &err));
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        must(ts_inject_mkdir_p(ij, "/etc/ssl/certs", &o, &err));
        must(ts_inject_mkdir_p(ij, "/usr/lib", &o, &err));
        must(ts_inject_symlink(ij, "usr/lib", "/lib", &o, &err));
        must(ts_inject_symlink(ij, "/loop2", "/loop1", &o, &err));
        must(ts_inject_symlink(ij, "loop1", "/loop2", &o, &err));
        must(ts_inject_symlink(ij, "../../../../..", "/etc/up", &o, &err));
        must(ts_inject_symlink(ij, "/tmp/host-path", "/etc/abs", &o, &err));
        must(ts_inject_symlink(ij, "self/a", "/self", &o, &err));
        const char *content = "plain file";
        char src[80];
        snprintf(src, sizeof src, "%s.src", base_img);
        fuzz_write_file(src, (const uint8_t *) content, strlen(content));
        must(ts_inject_write_file(ij, src, "/etc/file", &o, &err));
        must(ts_inject_write_file(ij, src, "/usr/lib/libx.so", &o, &err));
        unlink(src);
        must(ts_inject_close(ij, &err));

        FILE *f = fopen(base_img, "rb");
        if (!f)
                abort();
        fseek(f, 0, SEEK_END);
        base_len = (size_t) ftell(f);
        fseek(f, 0, SEEK_SET);
        base = malloc(base_len);
        if (!base || fread(base, 1, base_len, f) != base_len)
                abort();
        fclose(f);
        unlink(base_img);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 4096)
                return 0;
        char *parts[8];
        size_t n = fuzz_split(data, size, parts, 8);
        fuzz_write_file(work_img, base, base_len);

        ts_inject *ij = NULL;
        ts_error *err = NULL;
        if (ts_inject_open(work_img, 0, &ij, &err) < 0)
                abort();
        int memfd = -1;
        for (size_t i = 0; i < n; i++) {
                const char *p = parts[i];
                if (!p[0])
                        continue;
                char op = p[0];
                const char *path = p + 1;
                ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
                uint32_t ino;
                ts_error *e = NULL;
                switch (op % 5) {
                case 0:
                        (void) ts_inject_lookup(ij, path, &ino, &e);
                        break;
                case 1:
                        if (memfd < 0) {
                                char src[80];
                                snprintf(src, sizeof src, "%s.src", work_img);
                                fuzz_write_file(src, data, size);
                                memfd = open(src, O_RDONLY | O_CLOEXEC);
                                unlink(src);
                        }
                        o.flags = (op & 8) ? TS_INJECT_REFUSE_SYMLINK : 0;
                        (void) ts_inject_write_fd(ij, memfd, path, &o, &e);
                        break;
                case 2:
                        o.flags = (op & 8) ? TS_INJECT_NO_MKDIRS : 0;
                        (void) ts_inject_mkdir_p(ij, path, &o, &e);
                        break;
                case 3:
                        (void) ts_inject_symlink(ij, i + 1 < n && parts[i + 1][0] ? parts[i + 1] : "/x", path, &o,
                                                 &e);
                        break;
                default:
                        (void) ts_inject_mountpoints(ij, &e);
                        break;
                }
                ts_error_free(e);
        }
        if (memfd >= 0)
                close(memfd);
        if (ts_inject_close(ij, &err) < 0) {
                fprintf(stderr, "close failed: %s\n", ts_error_message(err, -1));
                abort();
        }
        for (size_t i = 0; i < n; i++)
                free(parts[i]);
        return 0;
}
