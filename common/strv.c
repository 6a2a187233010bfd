#include "strv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

char **ts_strv_free(char **v) {
        if (v) {
                for (char **p = v; *p; p++)
                        free(*p);
                free(v);
        }
        return NULL;
}

size_t ts_strv_length(char *const *v) {
        size_t n = 0;
        if (v)
                while (v[n])
                        n++;
        return n;
}

int ts_strv_push(char ***v, const char *s) {
        size_t n = ts_strv_length(*v);
        char *copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        char **nv = realloc(*v, (n + 2) * sizeof(char *));
        if (!nv) {
                free(copy);
                return -ENOMEM;
        }
        nv[n] = copy;
        nv[n + 1] = NULL;
        *v = nv;
        return 0;
}

int ts_strv_cmp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}
