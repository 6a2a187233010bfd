/* `thinsnap vm ...`: a client of thinsnapd's Provisioner service. */
#include "cmd-vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common/units.h"
#include "common/strv.h"
#include "pbjson.h"
#include "provclient.h"
#include "rpc/call.h"
#include "thinsnap/v1/provisioner.pb-c.h"

static const char vm_help[] =
        "Usage: thinsnap vm COMMAND [OPTIONS]\n"
        "\n"
        "One private copy-on-write device per VM, cut from a warmed image, through\n"
        "thinsnapd's provisioner. Each VM is a containerd lease thinsnap.vm.<ID>.\n"
        "\n"
        "Commands:\n"
        "  snapshot VM_ID IMAGE [--owner UID:GID] [--mode MODE]\n"
        "      Cut the VM's device from IMAGE (which must be warmed: see 'thinsnap image\n"
        "      pull') and print its path, so DEV=$(thinsnap vm snapshot vm1 alpine)\n"
        "      works. Asking again for the same VM and image gives the same device.\n"
        "      --owner and --mode hand the device node to a jailed VMM (mode default\n"
        "      0600 with --owner). IMAGE prepared:sha256:<hex> names the prepared image\n"
        "      of that user digest (see 'thinsnap image prepare'): its device is ready\n"
        "      to boot and cutting it writes nothing.\n"
        "  inject VM_ID HOST_FILE GUEST_PATH [--mode MODE] [--uid UID] [--gid GID]\n"
        "      Write HOST_FILE into the VM's filesystem at GUEST_PATH without mounting\n"
        "      it (mode default 0755, owner root). Refused while the device is open.\n"
        "  teardown VM_ID...\n"
        "      Remove each VM's device and lease; a VM that does not exist is fine.\n"
        "  ls\n"
        "      The VMs, from their leases.\n"
        "  gc (--keep VM_ID)... | --all\n"
        "      Tear down every VM not kept: a manager's reconcile after a crash.\n"
        "\n"
        "VM_ID: 1 to 64 characters of A-Z a-z 0-9 _ . -\n"
        "\n"
        "Options for every command:\n"
        "  --address SOCKET  the provisioner's socket (default $THINSNAP_ADDRESS or\n"
        "                    " TS_CLI_PROV_DEFAULT_ADDRESS ")\n"
        "  --json            machine-readable output on stdout\n"
        "  -h, --help        this text\n"
        "\n"
        "Exit status: 0 done, 1 the operation failed, 2 the command line was wrong.\n";

enum {
        OPT_ADDRESS = 256,
        OPT_JSON,
        OPT_OWNER,
        OPT_MODE,
        OPT_UID,
        OPT_GID,
        OPT_KEEP,
        OPT_ALL,
};

typedef struct vm_args {
        const char *cmd;
        const char *address;
        bool json, all, has_owner, has_mode;
        uint32_t uid, gid, mode;
        char **keep;
        char **args;
        int n_args;
} vm_args;

static void vm_args_done(vm_args *a) {
        a->keep = ts_strv_free(a->keep);
}

static int parse_owner(vm_args *a, const char *v) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", v);
        char *colon = strchr(buf, ':');
        if (colon)
                *colon = '\0';
        if (!colon || ts_units_parse_u32(buf, &a->uid) < 0 || ts_units_parse_u32(colon + 1, &a->gid) < 0)
                return ts_cli_usage_error(a->cmd, "--owner '%s' is not UID:GID (numbers)", v);
        a->has_owner = true;
        return 0;
}

static int vm_opt(void *ud, int c, const char *arg) {
        vm_args *a = ud;
        switch (c) {
        case OPT_ADDRESS: a->address = arg; return 0;
        case OPT_JSON: a->json = true; return 0;
        case OPT_OWNER: return parse_owner(a, arg);
        case OPT_MODE:
                if (ts_units_parse_mode(arg, &a->mode) < 0)
                        return ts_cli_usage_error(a->cmd, "--mode '%s' is not an octal mode", arg);
                a->has_mode = true;
                return 0;
        case OPT_UID:
        case OPT_GID:
                if (ts_units_parse_u32(arg, c == OPT_UID ? &a->uid : &a->gid) < 0)
                        return ts_cli_usage_error(a->cmd, "--%s '%s' is not a number",
                                                  c == OPT_UID ? "uid" : "gid", arg);
                return 0;
        case OPT_KEEP: return ts_strv_push(&a->keep, arg) < 0 ? TS_EXIT_FAILED : 0;
        case OPT_ALL: a->all = true; return 0;
        }
        return TS_EXIT_USAGE;
}

static const struct option vm_opts[] = {
        { "address", required_argument, NULL, OPT_ADDRESS },
        { "json", no_argument, NULL, OPT_JSON },
        { "owner", required_argument, NULL, OPT_OWNER },
        { "mode", required_argument, NULL, OPT_MODE },
        { "uid", required_argument, NULL, OPT_UID },
        { "gid", required_argument, NULL, OPT_GID },
        { "keep", required_argument, NULL, OPT_KEEP },
        { "all", no_argument, NULL, OPT_ALL },
        { "help", no_argument, NULL, 'h' },
        {},
};

/* Returns 0, -1 (help printed) or an exit code. */
static int parse(int argc, char **argv, const char *cmd, const char *allowed, vm_args *a) {
        ts_cli_opts o = { cmd, vm_opts, OPT_ADDRESS, allowed, vm_help };
        *a = (vm_args) { .cmd = cmd };
        return ts_cli_getopt(&o, argc, argv, vm_opt, a, &a->args, &a->n_args);
}

static int need_args(const vm_args *a, int min, int max, const char *what) {
        return ts_cli_need_args(a->cmd, a->args, a->n_args, min, max, what);
}

static int call(const vm_args *a, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret) {
        _cleanup_error_ ts_error *err = NULL;
        ts_rpc_client *c = NULL;
        int r = ts_cli_prov_connect(ts_cli_prov_address(a->address), &c, &err);
        if (r >= 0)
                r = ts_cli_prov_call(c, method, req, desc, ret, &err);
        ts_rpc_client_free(c);
        return r < 0 ? ts_cli_fail_json(a->cmd, a->json, err, r) : 0;
}

static int cmd_snapshot(vm_args *a) {
        int r = need_args(a, 2, 2, "VM_ID IMAGE");
        if (r)
                return r;
        if (a->has_mode && !a->has_owner)
                return ts_cli_usage_error(a->cmd, "--mode goes with --owner UID:GID");
        Thinsnap__V1__SnapshotRequest req = THINSNAP__V1__SNAPSHOT_REQUEST__INIT;
        req.vm_id = a->args[0];
        req.image = a->args[1];
        req.set_owner = a->has_owner;
        req.uid = a->uid;
        req.gid = a->gid;
        req.mode = a->mode;
        _cleanup_message_ Thinsnap__V1__VM *vm = NULL;
        if ((r = call(a, "Snapshot", &req.base, &thinsnap__v1__vm__descriptor,
                      (ProtobufCMessage **) &vm)))
                return r;
        if (a->json)
                ts_cli_print_json(ts_pbjson_from_message(&vm->base));
        else
                puts(vm->device);
        return TS_EXIT_OK;
}

static int cmd_inject(vm_args *a) {
        int r = need_args(a, 3, 3, "VM_ID HOST_FILE GUEST_PATH");
        if (r)
                return r;
        if (a->args[2][0] != '/')
                return ts_cli_usage_error(a->cmd, "GUEST_PATH '%s' must be absolute", a->args[2]);
        _cleanup_free_ char *path = realpath(a->args[1], NULL);
        if (!path) {
                _cleanup_error_ ts_error *err = NULL;
                return ts_cli_fail_json(a->cmd, a->json, err, ts_error_set(&err, errno, "%s", a->args[1]));
        }
        Thinsnap__V1__InjectFileRequest req = THINSNAP__V1__INJECT_FILE_REQUEST__INIT;
        req.vm_id = a->args[0];
        req.host_path = path;
        req.guest_path = a->args[2];
        req.mode = a->has_mode ? a->mode : 0755;
        req.uid = a->uid;
        req.gid = a->gid;
        _cleanup_message_ Thinsnap__V1__InjectFileResponse *resp = NULL;
        if ((r = call(a, "InjectFile", &req.base, &thinsnap__v1__inject_file_response__descriptor,
                      (ProtobufCMessage **) &resp)))
                return r;
        if (a->json)
                ts_cli_print_json(ts_pbjson_from_message(&resp->base));
        else
                printf("%s: wrote %s (%llu bytes, mode %04o, %u:%u)\n", resp->device, a->args[2],
                       (unsigned long long) resp->bytes, req.mode, req.uid, req.gid);
        return TS_EXIT_OK;
}

static int cmd_teardown(vm_args *a) {
        int r = need_args(a, 1, -1, "one VM_ID or more");
        if (r)
                return r;
        _cleanup_json_ json_object *all = json_object_new_array();
        for (int i = 0; i < a->n_args; i++) {
                Thinsnap__V1__TeardownRequest req = THINSNAP__V1__TEARDOWN_REQUEST__INIT;
                req.vm_id = a->args[i];
                _cleanup_message_ Thinsnap__V1__TeardownResponse *resp = NULL;
                if ((r = call(a, "Teardown", &req.base, &thinsnap__v1__teardown_response__descriptor,
                              (ProtobufCMessage **) &resp)))
                        return r;
                if (a->json) {
                        json_object *o = ts_pbjson_from_message(&resp->base);
                        json_object_object_add(o, "vm_id", json_object_new_string(req.vm_id));
                        json_object_array_add(all, o);
                } else
                        printf("%s: %s%s%s\n", req.vm_id, resp->existed ? "torn down" : "no such VM",
                               *resp->device ? ": " : "", resp->device);
        }
        if (a->json)
                ts_cli_print_json(TAKE_PTR(all));
        return TS_EXIT_OK;
}

static int cmd_ls(vm_args *a) {
        int r = need_args(a, 0, 0, "no arguments");
        if (r)
                return r;
        Thinsnap__V1__ListVMsRequest req = THINSNAP__V1__LIST_VMS_REQUEST__INIT;
        _cleanup_message_ Thinsnap__V1__ListVMsResponse *resp = NULL;
        if ((r = call(a, "ListVMs", &req.base, &thinsnap__v1__list_vms_response__descriptor,
                      (ProtobufCMessage **) &resp)))
                return r;
        if (a->json) {
                ts_cli_print_json(ts_pbjson_from_message(&resp->base));
                return TS_EXIT_OK;
        }
        printf("%-24s %-32s %-40s %10s\n", "VM", "IMAGE", "DEVICE", "SIZE");
        for (size_t i = 0; i < resp->n_vms; i++) {
                const Thinsnap__V1__VM *vm = resp->vms[i];
                char size[32];
                printf("%-24s %-32s %-40s %10s\n", vm->vm_id, vm->image, vm->device,
                       ts_units_format_size(vm->size_bytes, size, sizeof size));
        }
        return TS_EXIT_OK;
}

static int cmd_gc(vm_args *a) {
        int r = need_args(a, 0, 0, "no arguments besides --keep");
        if (r)
                return r;
        if (!a->keep && !a->all)
                return ts_cli_usage_error(a->cmd, "this would tear down every VM: name the ones to "
                                                  "keep with --keep VM_ID, or pass --all");
        if (a->keep && a->all)
                return ts_cli_usage_error(a->cmd, "--all and --keep exclude each other");
        Thinsnap__V1__GarbageCollectVMsRequest req = THINSNAP__V1__GARBAGE_COLLECT_VMS_REQUEST__INIT;
        req.keep = a->keep;
        req.n_keep = ts_strv_length(a->keep);
        _cleanup_message_ Thinsnap__V1__GarbageCollectVMsResponse *resp = NULL;
        if ((r = call(a, "GarbageCollectVMs", &req.base,
                      &thinsnap__v1__garbage_collect_vms_response__descriptor,
                      (ProtobufCMessage **) &resp)))
                return r;
        if (a->json)
                ts_cli_print_json(ts_pbjson_from_message(&resp->base));
        else {
                for (size_t i = 0; i < resp->n_removed; i++)
                        printf("%s: torn down\n", resp->removed[i]);
                for (size_t i = 0; i < resp->n_failed; i++)
                        fprintf(stderr, "thinsnap vm gc: %s: %s\n", resp->failed[i]->vm_id,
                                resp->failed[i]->error);
        }
        return resp->n_failed ? TS_EXIT_FAILED : TS_EXIT_OK;
}

int ts_cmd_vm(int argc, char **argv) {
        static const struct {
                const char *name, *cmd, *allowed;
                int (*fn)(vm_args *);
        } subs[] = {
                { "snapshot", "vm snapshot", "address json owner mode", cmd_snapshot },
                { "inject", "vm inject", "address json mode uid gid", cmd_inject },
                { "teardown", "vm teardown", "address json", cmd_teardown },
                { "ls", "vm ls", "address json", cmd_ls },
                { "gc", "vm gc", "address json keep all", cmd_gc },
        };
        if (argc < 2) {
                fputs(vm_help, stderr);
                return TS_EXIT_USAGE;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                fputs(vm_help, stdout);
                return TS_EXIT_OK;
        }
        for (size_t i = 0; i < TS_ARRAY_SIZE(subs); i++) {
                if (strcmp(argv[1], subs[i].name) != 0)
                        continue;
                _cleanup_(vm_args_done) vm_args a = { 0 };
                int r = parse(argc - 1, argv + 1, subs[i].cmd, subs[i].allowed, &a);
                if (r)
                        return r < 0 ? TS_EXIT_OK : r;
                return subs[i].fn(&a);
        }
        return ts_cli_usage_error("vm", "unknown command '%s'", argv[1]);
}
