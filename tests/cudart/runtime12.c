// SPDX-License-Identifier: GPL-2.0
// A C program built against CUDA 12.9's cuda_runtime_api.h and linked with emuv's
// libcudart.so.12 (tests/src/bin/emuv_cudart.rs builds and runs it): the runtime reports 12.9 and
// fills CUDA 12's cudaDeviceProp, whose layout differs from CUDA 13's (clockRate, computeMode...
// sit between fields both have). Prints `ok - NAME` or `not ok - NAME: DETAIL` per check.
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <string.h>

static int failures;

static void check(const char *name, int ok, const char *detail)
{
	printf(ok ? "ok - %s\n" : "not ok - %s: %s\n", name, detail);
	failures += !ok;
}

int main(int argc, char **argv)
{
	const char *card = argc > 1 ? argv[1] : "NVIDIA GeForce RTX 4090";
	char detail[512];
	int version = 0;
	cudaError_t e = cudaRuntimeGetVersion(&version);
	snprintf(detail, sizeof(detail), "%d %d", e, version);
	check("cudaRuntimeGetVersion is 12090", e == cudaSuccess && version == 12090, detail);
	struct cudaDeviceProp p;
	memset(&p, 0xff, sizeof(p));
	e = cudaGetDeviceProperties(&p, 0);
	snprintf(detail, sizeof(detail), "%d %s", e, cudaGetErrorName(e));
	check("cudaGetDeviceProperties (CUDA 12's _v2)", e == cudaSuccess, detail);
	check("name", strcmp(p.name, card) == 0, p.name);
	int clock = 0, memory_clock = 0, sms = 0, l2 = 0;
	cudaDeviceGetAttribute(&clock, cudaDevAttrClockRate, 0);
	cudaDeviceGetAttribute(&memory_clock, cudaDevAttrMemoryClockRate, 0);
	cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
	cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
	snprintf(detail, sizeof(detail), "clockRate %d/%d memoryClockRate %d/%d computeMode %d deviceOverlap %d",
		 p.clockRate, clock, p.memoryClockRate, memory_clock, p.computeMode, p.deviceOverlap);
	check("CUDA 12's own fields: clock rates, compute mode, overlap",
	      clock > 0 && p.clockRate == clock && memory_clock > 0 && p.memoryClockRate == memory_clock &&
		      p.computeMode == 0 && p.deviceOverlap == 1,
	      detail);
	snprintf(detail, sizeof(detail), "%d.%d, %d SMs, L2 %d, warp %d, unified %d, reserved[0] %d", p.major, p.minor,
		 p.multiProcessorCount, p.l2CacheSize, p.warpSize, p.unifiedAddressing, p.reserved[0]);
	check("fields after them in CUDA 12's places",
	      p.major == 8 && p.minor == 9 && p.multiProcessorCount == sms && p.l2CacheSize == l2 && p.warpSize == 32 &&
		      p.unifiedAddressing == 1 && p.reserved[0] == 0,
	      detail);
	void *d = NULL;
	e = cudaMalloc(&d, 1 << 20);
	cudaError_t f = cudaFree(d);
	snprintf(detail, sizeof(detail), "%d %d", e, f);
	check("cudaMalloc and cudaFree", e == cudaSuccess && f == cudaSuccess && d != NULL, detail);
	return failures != 0;
}
