// SPDX-License-Identifier: GPL-2.0
/*
 * Allocates emulated VRAM through /dev/emuv, maps it, fills it, verifies it, frees it.
 * Given SECONDS, it holds the allocation that long first, for GPU tools to see.
 *
 *   cc -I include -o vram_fill examples/vram_fill.c && sudo ./vram_fill [MiB [SECONDS]]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uapi/emuv.h>

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 16;
	struct emuv_info info = { .size = sizeof(info) };
	struct emuv_alloc req = { .size = sizeof(req), .bytes = mib << 20, .tier = EMUV_TIER_ANY };
	struct emuv_free fr = { 0 };
	uint8_t *p;
	uint64_t i;
	int fd;

	fd = open("/dev/emuv", O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, EMUV_IOCTL_INFO, &info)) {
		perror("/dev/emuv");
		return 1;
	}
	printf("%s: %llu MiB free of %llu MiB\n", info.name,
	       (unsigned long long)(info.free >> 20), (unsigned long long)(info.total >> 20));
	if (ioctl(fd, EMUV_IOCTL_ALLOC, &req)) {
		perror("EMUV_IOCTL_ALLOC");
		return 1;
	}
	p = mmap(NULL, req.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, req.mmap_offset);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (i = 0; i < req.bytes; i++)
		p[i] = (uint8_t)(i * 7 + (i >> 12));
	for (i = 0; i < req.bytes; i++) {
		if (p[i] != (uint8_t)(i * 7 + (i >> 12))) {
			fprintf(stderr, "mismatch at byte %llu\n", (unsigned long long)i);
			return 1;
		}
	}
	if (argc > 2) {
		printf("holding %llu MiB for %s s\n", (unsigned long long)(req.bytes >> 20), argv[2]);
		fflush(stdout);
		sleep((unsigned int)strtoul(argv[2], NULL, 10));
	}
	munmap(p, req.bytes);
	fr.handle = req.handle;
	if (ioctl(fd, EMUV_IOCTL_FREE, &fr)) {
		perror("EMUV_IOCTL_FREE");
		return 1;
	}
	printf("filled and verified %llu MiB in the %s tier\n", (unsigned long long)(req.bytes >> 20),
	       req.tier == EMUV_TIER_PHYSICAL ? "physical" : "virtual");
	close(fd);
	return 0;
}
