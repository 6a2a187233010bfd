/* `thinsnap inject`: the CLI front of inject/.
 *
 *   thinsnap inject TARGET HOST_FILE GUEST_PATH [--mode MODE] [--uid N] [--gid N]
 *                   [--mtime SECONDS] [--no-mkdirs] [--no-replace-symlink] [--json]
 *   thinsnap inject --mountpoints TARGET [--json]
 *
 * TARGET is a block device or an image file holding ext2/3/4. */
#pragma once

/* Runs the subcommand; argv[0] is "inject". Prints results on stdout (JSON
 * with --json) and one error line on stderr. Returns the process exit code:
 * 0 done, 1 the operation failed, 2 usage error. */
int ts_cmd_inject(int argc, char **argv);
