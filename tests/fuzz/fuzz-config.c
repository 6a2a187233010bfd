/* libFuzzer target: thinsnapd's configuration file parser. */
#include <stddef.h>
#include <stdint.h>

#include "plugin/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ts_config cfg = { 0 };
        ts_error *err = NULL;
        (void) ts_config_parse((const char *) data, size, &cfg, &err);
        ts_error_free(err);
        ts_config_done(&cfg);
        return 0;
}
