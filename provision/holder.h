/* Who has a block device open: for an error that tells the operator what
 * to stop before a VM's device can go. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Writes "pid <n> (<comm>)" of the first process found with an open
 * descriptor on the block device dev (st_rdev), and ", and <k> more" when
 * there are others, into buf. Returns the number of processes found (0: none
 * visible, e.g. the holder is the kernel: a mount or another dm device). */
int prov_holders(dev_t dev, char *buf, size_t len);
