/* Fuzzes opening a hostile image and working in it: the input is the whole
 * image. Whatever the bytes, ts_inject must refuse with an error or do what
 * it was asked, never crash, hang or leak. */
#include "fuzz-inject-common.h"

static char work_img[64], src[80];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
        snprintf(work_img, sizeof work_img, "/tmp/fuzz-inject-image-%d.img", (int) getpid());
        snprintf(src, sizeof src, "%s.src", work_img);
        static const char content[] = "#!/bin/sh\nexec /sbin/agent\n";
        fuzz_write_file(src, (const uint8_t *) content, sizeof content - 1);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 2048 || size > (1u << 20))
                return 0;
        fuzz_write_file(work_img, data, size);
        ts_inject *ij = NULL;
        ts_error *err = NULL;
        if (ts_inject_open(work_img, 0, &ij, &err) < 0) {
                ts_error_free(err);
                return 0;
        }
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        uint32_t ino;
        static const char *const lookups[] = { "/", "/etc", "/etc/passwd", "/lib/x", "/a/b/c", "/lost+found/.." };
        for (size_t i = 0; i < sizeof lookups / sizeof *lookups; i++) {
                ts_error *e = NULL;
                (void) ts_inject_lookup(ij, lookups[i], &ino, &e);
                ts_error_free(e);
        }
        ts_error *e = NULL;
        (void) ts_inject_write_file(ij, src, "/etc/agent/run", &o, &e);
        ts_error_free(e);
        e = NULL;
        (void) ts_inject_write_file(ij, src, "/etc/agent/run", &o, &e); /* replace */
        ts_error_free(e);
        e = NULL;
        (void) ts_inject_symlink(ij, "/etc/agent/run", "/init", &o, &e);
        ts_error_free(e);
        e = NULL;
        (void) ts_inject_mountpoints(ij, &e);
        ts_error_free(e);
        (void) ts_inject_close(ij, &err);
        ts_error_free(err);
        return 0;
}
