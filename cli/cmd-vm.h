#pragma once
/* `thinsnap vm ...`: argv[0] is "vm". Returns an exit code (cli.h). */
int ts_cmd_vm(int argc, char **argv);
