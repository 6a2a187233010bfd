#pragma once
/* `thinsnap image ...`: argv[0] is "image". Returns an exit code (cli.h). */
int ts_cmd_image(int argc, char **argv);
