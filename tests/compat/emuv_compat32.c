// SPDX-License-Identifier: GPL-2.0
/*
 * A 32-bit program using /dev/emuv: the ioctl structures have one layout for 32- and 64-bit
 * callers and compat_ioctl serves them. kselftest-style: TAP 13 and kselftest's exit codes.
 * Built with -m32 -static by scripts/check.sh; loads emuv itself (finit_module).
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uapi/emuv.h>

/* Live at once, each mapped: every allocation's offset must be within mmap2's reach. */
#define LIVE 100
#define LIVE_BYTES (64 << 10)

static int n, failed;

static void result(int ok, const char *name)
{
	n++;
	failed += !ok;
	printf("%sok %d %s\n", ok ? "" : "not ", n, name);
}

static int map_many(int fd)
{
	static struct emuv_alloc reqs[LIVE];
	static uint8_t *maps[LIVE];
	struct emuv_free fr = { 0 };
	int i, ok = 1;

	for (i = 0; i < LIVE && ok; i++) {
		reqs[i] = (struct emuv_alloc){ .size = sizeof(reqs[i]), .bytes = LIVE_BYTES };
		ok = ioctl(fd, EMUV_IOCTL_ALLOC, &reqs[i]) == 0;
		maps[i] = ok ? mmap(NULL, LIVE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
				    (off_t)reqs[i].mmap_offset) : MAP_FAILED;
		if (maps[i] == MAP_FAILED) {
			printf("# allocation %d (offset %#llx): %s\n", i,
			       (unsigned long long)reqs[i].mmap_offset, strerror(errno));
			ok = 0;
			break;
		}
		memset(maps[i], i, LIVE_BYTES);
	}
	for (int j = 0; j < i; j++) {
		if (maps[j] != MAP_FAILED) {
			ok = ok && maps[j][0] == (uint8_t)j && maps[j][LIVE_BYTES - 1] == (uint8_t)j;
			munmap(maps[j], LIVE_BYTES);
		}
		fr.handle = reqs[j].handle;
		ok = ioctl(fd, EMUV_IOCTL_FREE, &fr) == 0 && ok;
	}
	return ok;
}

static int list_processes(int fd)
{
	struct emuv_process entries[4];
	struct emuv_processes req = {
		.size = sizeof(req), .entry_size = sizeof(entries[0]),
		.count = 4, .entries = (uintptr_t)entries,
	};

	memset(entries, 0xff, sizeof(entries));
	return ioctl(fd, EMUV_IOCTL_PROCESSES, &req) == 0 && req.total >= 1 && req.count == req.total &&
	       entries[0].pid == getpid() && !strcmp(entries[0].comm, "emuv_compat32");
}

int main(void)
{
	struct emuv_info info = { .size = sizeof(info) };
	struct emuv_alloc req = { .size = sizeof(req), .bytes = (1 << 20) + 1, .tier = EMUV_TIER_ANY };
	struct emuv_query q = { 0 };
	struct emuv_free fr = { 0 };
	char path[4096];
	const char *dir = getenv("EMUV_MODULE_DIR");
	uint8_t *p;
	int fd, mod, ok;

	printf("TAP version 13\n1..7\n");
	snprintf(path, sizeof(path), "%s/emuv.ko", dir ? dir : ".");
	mod = open(path, O_RDONLY | O_CLOEXEC);
	syscall(SYS_delete_module, "emuv", O_NONBLOCK);
	ok = mod >= 0 && syscall(SYS_finit_module, mod, "physical_vram_mb=32 virtual_vram_mb=0", 0) == 0;
	result(ok, "insmod emuv.ko from a 32-bit process");
	if (!ok) {
		printf("# %s: %s\n", path, strerror(errno));
		return 1;
	}
	fd = open("/dev/emuv", O_RDWR | O_CLOEXEC);
	ok = fd >= 0 && ioctl(fd, EMUV_IOCTL_INFO, &info) == 0 && info.abi_version == EMUV_ABI_VERSION &&
	     info.total == 32u << 20 && info.device_id == 0x2786 && !strcmp(info.name, "NVIDIA GeForce RTX 4070");
	result(ok, "EMUV_IOCTL_INFO");
	ok = ioctl(fd, EMUV_IOCTL_ALLOC, &req) == 0 && req.bytes == (1 << 20) + 4096 &&
	     req.tier == EMUV_TIER_PHYSICAL && req.handle != 0;
	result(ok, "EMUV_IOCTL_ALLOC");
	p = mmap(NULL, req.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)req.mmap_offset);
	ok = p != MAP_FAILED;
	if (ok) {
		memset(p, 0x5a, req.bytes);
		q.handle = req.handle;
		ok = ioctl(fd, EMUV_IOCTL_QUERY, &q) == 0 && q.bytes == req.bytes && q.resident == req.bytes &&
		     q.mappings == 1 && p[req.bytes - 1] == 0x5a;
		munmap(p, req.bytes);
	}
	result(ok, "mmap and EMUV_IOCTL_QUERY");
	fr.handle = req.handle;
	ok = ioctl(fd, EMUV_IOCTL_FREE, &fr) == 0 && ioctl(fd, EMUV_IOCTL_INFO, &info) == 0 && info.used == 0;
	result(ok, "EMUV_IOCTL_FREE");
	result(map_many(fd), "100 live allocations, each mapped, from a 32-bit process");
	result(list_processes(fd), "EMUV_IOCTL_PROCESSES writes its entries to a 32-bit pointer");
	close(fd);
	syscall(SYS_delete_module, "emuv", O_NONBLOCK);
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:0 error:0\n", n - failed, failed);
	return failed ? 1 : 0;
}
