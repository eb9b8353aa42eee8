// SPDX-License-Identifier: GPL-2.0
/* The ioctl numbers as the C header computes them, for the Rust crate to use and check. */
#include <uapi/emuv.h>

const unsigned int emuv_ioctl_info = EMUV_IOCTL_INFO;
const unsigned int emuv_ioctl_alloc = EMUV_IOCTL_ALLOC;
const unsigned int emuv_ioctl_free = EMUV_IOCTL_FREE;
const unsigned int emuv_ioctl_query = EMUV_IOCTL_QUERY;
const unsigned int emuv_ioctl_processes = EMUV_IOCTL_PROCESSES;
