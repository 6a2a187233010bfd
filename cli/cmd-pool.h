#pragma once
/* `thinsnap pool ...`: argv[0] is "pool". Returns an exit code (cli.h). */
int ts_cmd_pool(int argc, char **argv);
/* `thinsnap thin ...`: argv[0] is "thin". Returns an exit code (cli.h). */
int ts_cmd_thin(int argc, char **argv);
