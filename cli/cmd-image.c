/* `thinsnap image ...`: a client of thinsnapd's Provisioner service. */
#include "cmd-image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "common/units.h"
#include "pbjson.h"
#include "progress.h"
#include "provclient.h"
#include "rpc/call.h"
#include "thinsnap/v1/provisioner.pb-c.h"

static const char image_help[] =
        "Usage: thinsnap image COMMAND [OPTIONS]\n"
        "\n"
        "Warm images into the pool and look at them, through thinsnapd's provisioner.\n"
        "\n"
        "Commands:\n"
        "  pull REF [--platform OS/ARCH[/VARIANT]] [--plain-http] [--user USER[:PASSWORD]]\n"
        "           [--password-stdin] [--ca-file FILE] [--detach]\n"
        "      Pull REF from its registry and unpack it into the pool. A pull of the\n"
        "      same image already queued or running is joined. Blobs already present\n"
        "      are not downloaded again. Progress goes to stderr (bars on a terminal);\n"
        "      stdout gets the image's name and digest when it is ready.\n"
        "  import FILE [--name NAME] [--platform OS/ARCH[/VARIANT]] [--detach]\n"
        "      The same from an OCI image layout tarball or a `docker save` tarball.\n"
        "  ls\n"
        "      Images, with warms in progress and failed ones.\n"
        "  inspect IMAGE\n"
        "  config IMAGE\n"
        "      The image's entrypoint, command, environment, working directory, user,\n"
        "      exposed ports, labels, and whether it starts systemd as init.\n"
        "  rm IMAGE...\n"
        "      Delete image records; what nothing else uses is collected at once.\n"
        "  prepare REF --digest sha256:<hex> --agent FILE [--guest-path PATH]\n"
        "          [--entrypoint agent|keep] [--plain-http] [--user USER[:PASSWORD]]\n"
        "          [--password-stdin] [--ca-file FILE] [--max-layers N]\n"
        "          [--max-compressed-bytes SIZE] [--max-unpacked-bytes SIZE]\n"
        "          [--max-inodes N] [--max-agent-bytes SIZE]\n"
        "      Prepare the user's image REF, which must resolve to --digest: warm it,\n"
        "      add one layer holding FILE at PATH (default /.hpcc/agent, mode 0755,\n"
        "      root:root) and each of /proc /sys /dev /tmp /run the image lacks, and\n"
        "      record it as prepared.hpcc.local/img:<hex>. VMs are then cut from it\n"
        "      with 'thinsnap vm snapshot VM_ID prepared:sha256:<hex>', writing\n"
        "      nothing. --entrypoint agent makes the agent the image's entrypoint (the\n"
        "      user's entrypoint and cmd move to the record's labels). Run again with\n"
        "      the same agent it changes nothing; another agent replaces it. The\n"
        "      --max-* options lower the daemon's limits for this call.\n"
        "  prepared\n"
        "      The prepared images: user digest, source, agent, sizes, created time.\n"
        "  unprepare sha256:<hex>...\n"
        "      Delete prepared images (what other images or VMs use stays); one that\n"
        "      does not exist is fine.\n"
        "\n"
        "IMAGE is a reference (alpine, host:5000/x/y:tag), a digest (sha256:<hex>) or a\n"
        "unique prefix of the digest's hex (at least 4 characters).\n"
        "\n"
        "Options for every command:\n"
        "  --address SOCKET  the provisioner's socket (default $THINSNAP_ADDRESS or\n"
        "                    " TS_CLI_PROV_DEFAULT_ADDRESS ")\n"
        "  --json            machine-readable output on stdout (pull and import: one\n"
        "                    JSON status per line)\n"
        "  -h, --help        this text\n"
        "\n"
        "Exit status: 0 done, 1 the operation failed, 2 the command line was wrong.\n";

enum {
        OPT_ADDRESS = 256,
        OPT_JSON,
        OPT_PLATFORM,
        OPT_PLAIN_HTTP,
        OPT_USER,
        OPT_PASSWORD_STDIN,
        OPT_CA_FILE,
        OPT_DETACH,
        OPT_NAME,
        OPT_DIGEST,
        OPT_AGENT,
        OPT_GUEST_PATH,
        OPT_ENTRYPOINT,
        OPT_MAX_LAYERS,
        OPT_MAX_COMPRESSED,
        OPT_MAX_UNPACKED,
        OPT_MAX_INODES,
        OPT_MAX_AGENT,
};

typedef struct image_args {
        const char *cmd; /* "image pull" */
        const char *address, *platform, *user, *ca_file, *name;
        const char *digest, *agent, *guest_path, *entrypoint;
        Thinsnap__V1__PrepareLimits limits;
        bool json, plain_http, password_stdin, detach;
        bool stream; /* prints JSON lines: pull and import */
        char **args;
        int n_args;
} image_args;

static const struct option image_opts[] = {
        { "address", required_argument, NULL, OPT_ADDRESS },
        { "json", no_argument, NULL, OPT_JSON },
        { "platform", required_argument, NULL, OPT_PLATFORM },
        { "plain-http", no_argument, NULL, OPT_PLAIN_HTTP },
        { "user", required_argument, NULL, OPT_USER },
        { "password-stdin", no_argument, NULL, OPT_PASSWORD_STDIN },
        { "ca-file", required_argument, NULL, OPT_CA_FILE },
        { "detach", no_argument, NULL, OPT_DETACH },
        { "name", required_argument, NULL, OPT_NAME },
        { "digest", required_argument, NULL, OPT_DIGEST },
        { "agent", required_argument, NULL, OPT_AGENT },
        { "guest-path", required_argument, NULL, OPT_GUEST_PATH },
        { "entrypoint", required_argument, NULL, OPT_ENTRYPOINT },
        { "max-layers", required_argument, NULL, OPT_MAX_LAYERS },
        { "max-compressed-bytes", required_argument, NULL, OPT_MAX_COMPRESSED },
        { "max-unpacked-bytes", required_argument, NULL, OPT_MAX_UNPACKED },
        { "max-inodes", required_argument, NULL, OPT_MAX_INODES },
        { "max-agent-bytes", required_argument, NULL, OPT_MAX_AGENT },
        { "help", no_argument, NULL, 'h' },
        {},
};

/* A --max-* value: a count or a size ("64M"). Returns 0 or TS_EXIT_USAGE. */
static int parse_limit(image_args *a, int c, const char *v) {
        char opt[48];
        snprintf(opt, sizeof opt, "--%s", image_opts[c - OPT_ADDRESS].name);
        uint64_t n = 0;
        int r = c == OPT_MAX_LAYERS || c == OPT_MAX_INODES
                        ? ts_cli_u64(a->cmd, opt, v, c == OPT_MAX_LAYERS ? UINT32_MAX : UINT64_MAX, &n)
                        : ts_cli_size(a->cmd, opt, v, &n);
        if (r)
                return r;
        if (n == 0)
                return ts_cli_usage_error(a->cmd, "%s must be above 0", opt);
        switch (c) {
        case OPT_MAX_LAYERS: a->limits.max_layers = (uint32_t) n; break;
        case OPT_MAX_COMPRESSED: a->limits.max_compressed_bytes = n; break;
        case OPT_MAX_UNPACKED: a->limits.max_unpacked_bytes = n; break;
        case OPT_MAX_INODES: a->limits.max_inodes = n; break;
        default: a->limits.max_agent_bytes = n; break;
        }
        return 0;
}

static int image_opt(void *ud, int opt, const char *arg) {
        image_args *a = ud;
        switch (opt) {
        case OPT_ADDRESS: a->address = arg; break;
        case OPT_JSON: a->json = true; break;
        case OPT_PLATFORM: a->platform = arg; break;
        case OPT_PLAIN_HTTP: a->plain_http = true; break;
        case OPT_USER: a->user = arg; break;
        case OPT_PASSWORD_STDIN: a->password_stdin = true; break;
        case OPT_CA_FILE: a->ca_file = arg; break;
        case OPT_DETACH: a->detach = true; break;
        case OPT_NAME: a->name = arg; break;
        case OPT_DIGEST: a->digest = arg; break;
        case OPT_AGENT: a->agent = arg; break;
        case OPT_GUEST_PATH: a->guest_path = arg; break;
        case OPT_ENTRYPOINT: a->entrypoint = arg; break;
        case OPT_MAX_LAYERS:
        case OPT_MAX_COMPRESSED:
        case OPT_MAX_UNPACKED:
        case OPT_MAX_INODES:
        case OPT_MAX_AGENT: return parse_limit(a, opt, arg);
        }
        return 0;
}

/* Returns 0, -1 (help printed) or an exit code. */
static int parse(int argc, char **argv, const char *cmd, const char *allowed, image_args *a) {
        ts_cli_opts o = { cmd, image_opts, OPT_ADDRESS, allowed, image_help };
        *a = (image_args) { .cmd = cmd };
        thinsnap__v1__prepare_limits__init(&a->limits);
        return ts_cli_getopt(&o, argc, argv, image_opt, a, &a->args, &a->n_args);
}

static int need_args(const image_args *a, int min, int max, const char *what) {
        return ts_cli_need_args(a->cmd, a->args, a->n_args, min, max, what);
}

/* A command that takes --address and --json and no operands: as parse(),
 * operands refused. */
static int parse_bare(int argc, char **argv, const char *cmd, image_args *a) {
        int r = parse(argc, argv, cmd, "address json", a);
        return r ? r : need_args(a, 0, 0, "no arguments");
}

/* The call's failure: one line on stderr, and a JSON object with --json. */
static int failed(const image_args *a, const ts_error *err, int r) {
        return ts_cli_fail_json_as(a->cmd, a->json, a->stream, err, r);
}

static int connect_service(const image_args *a, ts_rpc_client **ret, ts_error **err) {
        return ts_cli_prov_connect(ts_cli_prov_address(a->address), ret, err);
}

/* ---- pull / import ---- */

/* Reads a whole small file (a CA bundle). */
static int read_small_file(const char *path, uint8_t **ret, size_t *ret_len, ts_error **err) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return ts_error_set(err, errno, "%s", path);
        _cleanup_free_ uint8_t *buf = malloc(1 << 20);
        if (!buf)
                return -ENOMEM;
        size_t n = fread(buf, 1, 1 << 20, f);
        if (ferror(f))
                return ts_error_set(err, EIO, "read %s", path);
        if (!feof(f))
                return ts_error_setf_plain(err, EFBIG, "%s: larger than 1 MiB", path);
        *ret = TAKE_PTR(buf);
        *ret_len = n;
        return 0;
}

static int read_password(char **ret, ts_error **err) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
                free(line);
                return ts_error_setf_plain(err, EINVAL, "--password-stdin: no password on stdin");
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
        *ret = line;
        return 0;
}

/* Follows a PullImage/ImportImage stream to its end. */
static int follow(const image_args *a, ts_rpc_client_call *cc, ts_error **err) {
        _cleanup_(ts_cli_progress_done) ts_cli_progress pg;
        ts_cli_progress_init(&pg, a->json);
        _cleanup_message_ Thinsnap__V1__WarmStatus *last = NULL;
        for (;;) {
                ProtobufCMessage *m = NULL;
                int r = ts_rpc_client_call_recv_message(cc, &thinsnap__v1__warm_status__descriptor, &m,
                                                        err);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (last)
                        protobuf_c_message_free_unpacked(&last->base, NULL);
                last = (Thinsnap__V1__WarmStatus *) m;
                ts_cli_progress_show(&pg, last);
        }
        ts_cli_progress_done(&pg);
        if (!last)
                return ts_error_setf_plain(err, EPROTO, "the provisioner sent no status");
        if (!a->json)
                printf("%s %s\n", last->ref, *last->digest ? last->digest : "(digest not known yet)");
        return 0;
}

static int stream(const image_args *a, const char *method, const ProtobufCMessage *req) {
        _cleanup_error_ ts_error *err = NULL;
        ts_rpc_client *c = NULL;
        int r = connect_service(a, &c, &err);
        if (r < 0)
                return failed(a, err, r);
        ts_rpc_client_call *cc = NULL;
        r = ts_cli_prov_stream(c, method, req, &cc, &err);
        if (r >= 0)
                r = follow(a, cc, &err);
        ts_rpc_client_call_free(cc);
        ts_rpc_client_free(c);
        return r < 0 ? failed(a, err, r) : TS_EXIT_OK;
}

/* What --user, --password-stdin and --ca-file give: the strings point into
 * reg, which owns them. */
typedef struct registry_opts {
        char *user, *password, *username_out, *password_out;
        uint8_t *ca;
        size_t ca_len;
} registry_opts;

static void registry_opts_done(registry_opts *o) {
        free(o->user);
        if (o->password)
                explicit_bzero(o->password, strlen(o->password));
        free(o->password);
        free(o->ca);
}

/* Returns 0 or an exit code. */
static int registry_options(const image_args *a, registry_opts *o) {
        _cleanup_error_ ts_error *err = NULL;
        int r;
        if (a->user && !(o->user = strdup(a->user)))
                return failed(a, NULL, -ENOMEM);
        char *colon = o->user ? strchr(o->user, ':') : NULL;
        if (colon)
                *colon = '\0';
        if (a->password_stdin && (colon || !o->user))
                return ts_cli_usage_error(a->cmd, "--password-stdin goes with --user USER (no :PASSWORD)");
        if (a->password_stdin && (r = read_password(&o->password, &err)) < 0)
                return failed(a, err, r);
        o->username_out = o->user ? o->user : (char *) "";
        o->password_out = o->password ? o->password : colon ? colon + 1 : (char *) "";
        if (a->ca_file && (r = read_small_file(a->ca_file, &o->ca, &o->ca_len, &err)) < 0)
                return failed(a, err, r);
        return 0;
}

static int cmd_pull(int argc, char **argv) {
        image_args a;
        int r = parse(argc, argv, "image pull", "address json platform plain-http user "
                                              "password-stdin ca-file detach", &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        if ((r = need_args(&a, 1, 1, "one REF")))
                return r;
        a.stream = true;
        Thinsnap__V1__PullImageRequest req = THINSNAP__V1__PULL_IMAGE_REQUEST__INIT;
        req.ref = a.args[0];
        req.platform = (char *) (a.platform ? a.platform : "");
        req.plain_http = a.plain_http;
        req.detach = a.detach;
        _cleanup_(registry_opts_done) registry_opts ro = { 0 };
        if ((r = registry_options(&a, &ro)))
                return r;
        req.username = ro.username_out;
        req.password = ro.password_out;
        req.ca_pem.data = ro.ca;
        req.ca_pem.len = ro.ca_len;
        return stream(&a, "PullImage", &req.base);
}

static int cmd_import(int argc, char **argv) {
        image_args a;
        int r = parse(argc, argv, "image import", "address json platform name detach", &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        if ((r = need_args(&a, 1, 1, "one FILE")))
                return r;
        a.stream = true;
        /* The daemon opens it: hand it an absolute path, checked here first
         * so a typo reads as the caller's mistake. */
        _cleanup_free_ char *path = realpath(a.args[0], NULL);
        if (!path) {
                _cleanup_error_ ts_error *err = NULL;
                return failed(&a, err, ts_error_set(&err, errno, "%s", a.args[0]));
        }
        Thinsnap__V1__ImportImageRequest req = THINSNAP__V1__IMPORT_IMAGE_REQUEST__INIT;
        req.path = path;
        req.name = (char *) (a.name ? a.name : "");
        req.platform = (char *) (a.platform ? a.platform : "");
        req.detach = a.detach;
        return stream(&a, "ImportImage", &req.base);
}

/* ---- prepare ---- */

static void print_prepared(const Thinsnap__V1__PreparedImage *x) {
        printf("%s %s %s\n", x->user_digest, x->name, x->changed ? "prepared" : "unchanged");
}

/* Follows a PrepareImage stream: the warm's progress, then the result. */
static int follow_prepare(const image_args *a, ts_rpc_client_call *cc, ts_error **err) {
        _cleanup_(ts_cli_progress_done) ts_cli_progress pg;
        ts_cli_progress_init(&pg, false);
        bool done = false;
        for (;;) {
                _cleanup_message_ Thinsnap__V1__PrepareImageStatus *m = NULL;
                int r = ts_rpc_client_call_recv_message(cc, &thinsnap__v1__prepare_image_status__descriptor,
                                                        (ProtobufCMessage **) &m, err);
                if (r <= 0)
                        return r < 0 ? r : done ? 0 : ts_error_setf_plain(err, EPROTO, "the provisioner "
                                                                                       "sent no result");
                if (a->json)
                        ts_cli_print_json_line(ts_pbjson_from_message(&m->base));
                else if (m->warm)
                        ts_cli_progress_show(&pg, m->warm);
                if (m->prepared) {
                        ts_cli_progress_done(&pg);
                        if (!a->json)
                                print_prepared(m->prepared);
                        done = true;
                }
        }
}

static int cmd_prepare(int argc, char **argv) {
        image_args a;
        int r = parse(argc, argv, "image prepare", "address json digest agent guest-path entrypoint "
                                                 "plain-http user password-stdin ca-file max-layers "
                                                 "max-compressed-bytes max-unpacked-bytes max-inodes "
                                                 "max-agent-bytes", &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        if ((r = need_args(&a, 1, 1, "one REF")))
                return r;
        a.stream = true;
        if (!a.digest || !a.agent)
                return ts_cli_usage_error(a.cmd, "--digest sha256:<hex> and --agent FILE are required");
        if (a.entrypoint && strcmp(a.entrypoint, "agent") != 0 && strcmp(a.entrypoint, "keep") != 0)
                return ts_cli_usage_error(a.cmd, "--entrypoint '%s': use agent or keep", a.entrypoint);
        _cleanup_free_ char *agent = realpath(a.agent, NULL);
        if (!agent) {
                _cleanup_error_ ts_error *err = NULL;
                return failed(&a, err, ts_error_set(&err, errno, "--agent %s", a.agent));
        }
        Thinsnap__V1__PrepareImageRequest req = THINSNAP__V1__PREPARE_IMAGE_REQUEST__INIT;
        req.ref = a.args[0];
        req.digest = (char *) a.digest;
        req.agent_path = agent;
        req.guest_path = (char *) (a.guest_path ? a.guest_path : "");
        req.entrypoint = a.entrypoint && strcmp(a.entrypoint, "agent") == 0
                                 ? THINSNAP__V1__PREPARE_IMAGE_REQUEST__ENTRYPOINT__AGENT
                                 : THINSNAP__V1__PREPARE_IMAGE_REQUEST__ENTRYPOINT__KEEP;
        req.plain_http = a.plain_http;
        req.limits = &a.limits;
        _cleanup_(registry_opts_done) registry_opts ro = { 0 };
        if ((r = registry_options(&a, &ro)))
                return r;
        req.username = ro.username_out;
        req.password = ro.password_out;
        req.ca_pem.data = ro.ca;
        req.ca_pem.len = ro.ca_len;
        _cleanup_error_ ts_error *err = NULL;
        ts_rpc_client *c = NULL;
        ts_rpc_client_call *cc = NULL;
        if ((r = connect_service(&a, &c, &err)) >= 0 &&
            (r = ts_cli_prov_stream(c, "PrepareImage", &req.base, &cc, &err)) >= 0)
                r = follow_prepare(&a, cc, &err);
        ts_rpc_client_call_free(cc);
        ts_rpc_client_free(c);
        return r < 0 ? failed(&a, err, r) : TS_EXIT_OK;
}

/* ---- ls / inspect / config / rm ---- */

static int call(const image_args *a, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret) {
        _cleanup_error_ ts_error *err = NULL;
        ts_rpc_client *c = NULL;
        int r = connect_service(a, &c, &err);
        if (r >= 0)
                r = ts_cli_prov_call(c, method, req, desc, ret, &err);
        ts_rpc_client_free(c);
        return r < 0 ? failed(a, err, r) : 0;
}

static const char *short_digest(const char *d, char *buf, size_t len) {
        const char *hex = strchr(d, ':');
        snprintf(buf, len, "%.12s", hex ? hex + 1 : d);
        return buf;
}

static void image_state(const Thinsnap__V1__Image *img, char *buf, size_t len) {
        const Thinsnap__V1__WarmStatus *w = img->warm;
        if (!w || w->state == THINSNAP__V1__WARM_STATUS__STATE__READY)
                snprintf(buf, len, "%s", img->ready ? "ready" : "not unpacked");
        else if (w->state == THINSNAP__V1__WARM_STATUS__STATE__PENDING)
                snprintf(buf, len, "pending (%u)", w->queue_position);
        else if (w->state == THINSNAP__V1__WARM_STATUS__STATE__PULLING)
                snprintf(buf, len, "pulling %u%%",
                         w->bytes_total ? (unsigned) (w->bytes_done * 100 / w->bytes_total) : 0);
        else if (w->state == THINSNAP__V1__WARM_STATUS__STATE__UNPACKING)
                snprintf(buf, len, "unpacking %u/%u", w->layer, w->layers);
        else
                snprintf(buf, len, "failed");
}

static void print_images(const Thinsnap__V1__ListImagesResponse *resp) {
        printf("%-48s %-12s %-14s %6s %10s %10s\n", "NAME", "DIGEST", "STATE", "LAYERS", "CONTENT",
               "POOL");
        for (size_t i = 0; i < resp->n_images; i++) {
                const Thinsnap__V1__Image *img = resp->images[i];
                char d[16], st[32], cs[32], ps[32];
                image_state(img, st, sizeof st);
                printf("%-48s %-12s %-14s %6u %10s %10s\n", img->name,
                       *img->digest ? short_digest(img->digest, d, sizeof d) : "-", st, img->layers,
                       ts_units_format_size(img->content_bytes, cs, sizeof cs),
                       ts_units_format_size(img->pool_bytes, ps, sizeof ps));
                if (img->warm && img->warm->state == THINSNAP__V1__WARM_STATUS__STATE__FAILED)
                        printf("    error: %s\n", img->warm->error);
        }
        char cs[32], ps[32];
        printf("%zu image%s, content %s, pool %s\n", resp->n_images, resp->n_images == 1 ? "" : "s",
               ts_units_format_size(resp->total_content_bytes, cs, sizeof cs),
               ts_units_format_size(resp->total_pool_bytes, ps, sizeof ps));
}

static int cmd_ls(int argc, char **argv) {
        image_args a;
        int r = parse_bare(argc, argv, "image ls", &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        Thinsnap__V1__ListImagesRequest req = THINSNAP__V1__LIST_IMAGES_REQUEST__INIT;
        _cleanup_message_ Thinsnap__V1__ListImagesResponse *resp = NULL;
        if ((r = call(&a, "ListImages", &req.base, &thinsnap__v1__list_images_response__descriptor,
                      (ProtobufCMessage **) &resp)))
                return r;
        if (a.json)
                ts_cli_print_json(ts_pbjson_from_message(&resp->base));
        else
                print_images(resp);
        return TS_EXIT_OK;
}

/* inspect and config: one IMAGE, one message printed. */
static int cmd_show(int argc, char **argv, const char *cmd, const char *method,
                    const ProtobufCMessageDescriptor *req_desc,
                    const ProtobufCMessageDescriptor *resp_desc) {
        image_args a;
        int r = parse(argc, argv, cmd, "address json", &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        if ((r = need_args(&a, 1, 1, "one IMAGE")))
                return r;
        /* GetImageRequest and GetImageConfigRequest are both {string image = 1}. */
        Thinsnap__V1__GetImageRequest req = THINSNAP__V1__GET_IMAGE_REQUEST__INIT;
        req.base.descriptor = req_desc;
        req.image = a.args[0];
        _cleanup_message_ ProtobufCMessage *resp = NULL;
        if ((r = call(&a, method, &req.base, resp_desc, &resp)))
                return r;
        json_object *o = ts_pbjson_from_message(resp);
        if (a.json)
                ts_cli_print_json(o);
        else {
                ts_cli_print_fields(o);
                json_object_put(o);
        }
        return TS_EXIT_OK;
}

/* rm and unprepare: one call per operand, each answer shown (with --json all of them
 * as one array). Their requests are both {string = 1}: one message type serves. */
static int each_operand(int argc, char **argv, const char *cmd, const char *what, const char *method,
                        const ProtobufCMessageDescriptor *req_desc,
                        const ProtobufCMessageDescriptor *resp_desc,
                        json_object *(*show)(const char *arg, const ProtobufCMessage *resp, bool json)) {
        image_args a;
        int r = parse(argc, argv, cmd, "address json", &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        if ((r = need_args(&a, 1, -1, what)))
                return r;
        _cleanup_json_ json_object *all = json_object_new_array();
        for (int i = 0; i < a.n_args; i++) {
                Thinsnap__V1__RemoveImageRequest req = THINSNAP__V1__REMOVE_IMAGE_REQUEST__INIT;
                req.base.descriptor = req_desc;
                req.image = a.args[i];
                _cleanup_message_ ProtobufCMessage *resp = NULL;
                if ((r = call(&a, method, &req.base, resp_desc, &resp)))
                        return r;
                json_object *o = show(a.args[i], resp, a.json);
                if (o)
                        json_object_array_add(all, o);
        }
        if (a.json)
                ts_cli_print_json(TAKE_PTR(all));
        return TS_EXIT_OK;
}

static json_object *show_removed(const char *arg, const ProtobufCMessage *m, bool json) {
        const Thinsnap__V1__RemoveImageResponse *resp = (const void *) m;
        if (json)
                return ts_pbjson_from_message(m);
        printf("removed %s %s\n", resp->name, resp->digest);
        return NULL;
}

static int cmd_rm(int argc, char **argv) {
        return each_operand(argc, argv, "image rm", "one IMAGE or more", "RemoveImage",
                            &thinsnap__v1__remove_image_request__descriptor,
                            &thinsnap__v1__remove_image_response__descriptor, show_removed);
}

static int cmd_prepared(int argc, char **argv) {
        image_args a;
        int r = parse_bare(argc, argv, "image prepared", &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        Thinsnap__V1__ListPreparedImagesRequest req = THINSNAP__V1__LIST_PREPARED_IMAGES_REQUEST__INIT;
        _cleanup_message_ Thinsnap__V1__ListPreparedImagesResponse *resp = NULL;
        if ((r = call(&a, "ListPreparedImages", &req.base,
                      &thinsnap__v1__list_prepared_images_response__descriptor, (ProtobufCMessage **) &resp)))
                return r;
        if (a.json) {
                ts_cli_print_json(ts_pbjson_from_message(&resp->base));
                return TS_EXIT_OK;
        }
        printf("%-12s %-40s %-12s %-6s %10s %10s  %s\n", "USER DIGEST", "SOURCE", "AGENT", "ENTRY",
               "CONTENT", "POOL", "CREATED");
        for (size_t i = 0; i < resp->n_images; i++) {
                const Thinsnap__V1__PreparedImage *x = resp->images[i];
                char u[16], ag[16], cs[32], ps[32], when[32] = "-";
                time_t t = x->created_at ? (time_t) x->created_at->seconds : 0;
                struct tm tm;
                if (t && gmtime_r(&t, &tm))
                        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
                printf("%-12s %-40s %-12s %-6s %10s %10s  %s\n", short_digest(x->user_digest, u, sizeof u),
                       x->source, short_digest(x->agent_digest, ag, sizeof ag), x->entrypoint,
                       ts_units_format_size(x->content_bytes, cs, sizeof cs),
                       ts_units_format_size(x->pool_bytes, ps, sizeof ps), when);
        }
        char cs[32], ps[32];
        printf("%zu prepared image%s, content %s, pool %s (shared parts counted once)\n", resp->n_images,
               resp->n_images == 1 ? "" : "s", ts_units_format_size(resp->total_content_bytes, cs, sizeof cs),
               ts_units_format_size(resp->total_pool_bytes, ps, sizeof ps));
        return TS_EXIT_OK;
}

static json_object *show_unprepared(const char *arg, const ProtobufCMessage *m, bool json) {
        const Thinsnap__V1__UnprepareImageResponse *resp = (const void *) m;
        if (!json) {
                printf("%s: %s\n", arg, resp->existed ? "removed" : "no such prepared image");
                return NULL;
        }
        json_object *o = ts_pbjson_from_message(m);
        json_object_object_add(o, "digest", json_object_new_string(arg));
        return o;
}

static int cmd_unprepare(int argc, char **argv) {
        return each_operand(argc, argv, "image unprepare", "one sha256:<hex> or more", "UnprepareImage",
                            &thinsnap__v1__unprepare_image_request__descriptor,
                            &thinsnap__v1__unprepare_image_response__descriptor, show_unprepared);
}

int ts_cmd_image(int argc, char **argv) {
        if (argc < 2) {
                fputs(image_help, stderr);
                return TS_EXIT_USAGE;
        }
        const char *sub = argv[1];
        argc--, argv++;
        if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
                fputs(image_help, stdout);
                return TS_EXIT_OK;
        }
        if (strcmp(sub, "pull") == 0)
                return cmd_pull(argc, argv);
        if (strcmp(sub, "import") == 0)
                return cmd_import(argc, argv);
        if (strcmp(sub, "ls") == 0)
                return cmd_ls(argc, argv);
        if (strcmp(sub, "inspect") == 0)
                return cmd_show(argc, argv, "image inspect", "GetImage",
                                &thinsnap__v1__get_image_request__descriptor,
                                &thinsnap__v1__image__descriptor);
        if (strcmp(sub, "config") == 0)
                return cmd_show(argc, argv, "image config", "GetImageConfig",
                                &thinsnap__v1__get_image_config_request__descriptor,
                                &thinsnap__v1__image_config__descriptor);
        if (strcmp(sub, "rm") == 0)
                return cmd_rm(argc, argv);
        if (strcmp(sub, "prepare") == 0)
                return cmd_prepare(argc, argv);
        if (strcmp(sub, "prepared") == 0)
                return cmd_prepared(argc, argv);
        if (strcmp(sub, "unprepare") == 0)
                return cmd_unprepare(argc, argv);
        return ts_cli_usage_error("image", "unknown command '%s'", sub);
}
