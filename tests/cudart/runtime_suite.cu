// SPDX-License-Identifier: GPL-2.0
// A CUDA C program as users write them, built with `nvcc -cudart shared` against emuv's
// libcudart.so.13 (tests/src/bin/emuv_cudart.rs builds and runs it): memory, copies, a
// __device__ and a __managed__ variable, streams and events, managed memory, running out of
// memory, a kernel launch, and the runtime's error rules. Every check compares with what the
// kernel module says in sysfs or with what NVIDIA's runtime answered on a real card
// (../shared/reference/cuda/capture-580/03-cudart-13.out). Prints `ok - NAME` or
// `not ok - NAME: DETAIL` per check.
//
//   runtime_suite CARD-NAME         (CARD-NAME: the name sysfs gives, e.g. "NVIDIA GeForce RTX 4090")

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static int failures;

static void check(const char *name, bool ok, const std::string &detail = "")
{
	if (ok) {
		printf("ok - %s\n", name);
	} else {
		failures++;
		printf("not ok - %s: %s\n", name, detail.c_str());
	}
	fflush(stdout);
}

static std::string err(cudaError_t e)
{
	return std::to_string((int)e) + " " + cudaGetErrorName(e);
}

static unsigned long long sysfs(const char *attr)
{
	char path[256];
	snprintf(path, sizeof(path), "/sys/class/emuv/emuv/%s", attr);
	FILE *f = fopen(path, "r");
	unsigned long long v = 0;
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static unsigned long long emuv_free()
{
	return sysfs("total_vram_bytes") - sysfs("used_bytes");
}

__device__ int table[4] = {1, 2, 3, 4};
__managed__ int managed_answer = 42;

__global__ void add_one(int *p)
{
	p[threadIdx.x] += table[0];
}

static void versions()
{
	int rt = 0, drv = 0;
	check("cudaRuntimeGetVersion is 13000", cudaRuntimeGetVersion(&rt) == cudaSuccess && rt == 13000,
	      std::to_string(rt));
	check("cudaDriverGetVersion is at least 13000",
	      cudaDriverGetVersion(&drv) == cudaSuccess && drv >= 13000, std::to_string(drv));
}

static void properties(const char *card_name)
{
	int count = -1;
	cudaError_t e = cudaGetDeviceCount(&count);
	check("cudaGetDeviceCount: one card", e == cudaSuccess && count == 1, err(e) + " " + std::to_string(count));
	cudaDeviceProp p;
	memset(&p, 0xff, sizeof(p));
	e = cudaGetDeviceProperties(&p, 0);
	check("cudaGetDeviceProperties", e == cudaSuccess, err(e));
	check("name is the card's", strcmp(p.name, card_name) == 0, p.name);
	check("totalGlobalMem is the card's VRAM", p.totalGlobalMem == sysfs("total_vram_bytes"),
	      std::to_string(p.totalGlobalMem));
	check("compute capability 8.9", p.major == 8 && p.minor == 9,
	      std::to_string(p.major) + "." + std::to_string(p.minor));
	// Every field read from its attribute: a few, against cudaDeviceGetAttribute.
	int sms = 0, l2 = 0, bus = 0, threads = 0, optin = 0;
	cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
	cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
	cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, 0);
	cudaDeviceGetAttribute(&threads, cudaDevAttrMaxThreadsPerMultiProcessor, 0);
	cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
	check("RTX 4090: 128 SMs, 72 MiB L2, 384-bit bus",
	      p.multiProcessorCount == 128 && sms == 128 && p.l2CacheSize == 72 * 1024 * 1024 &&
		      l2 == p.l2CacheSize && p.memoryBusWidth == 384 && bus == 384,
	      std::to_string(p.multiProcessorCount) + " " + std::to_string(p.l2CacheSize) + " " +
		      std::to_string(p.memoryBusWidth));
	check("fields agree with their attributes",
	      p.maxThreadsPerMultiProcessor == threads && p.sharedMemPerBlockOptin == (size_t)optin &&
		      p.warpSize == 32 && p.maxThreadsPerBlock == 1024 && p.unifiedAddressing == 1 &&
		      p.managedMemory == 1 && p.concurrentManagedAccess == 1,
	      std::to_string(p.maxThreadsPerMultiProcessor) + " " + std::to_string(p.sharedMemPerBlockOptin));
	char bus_id[32] = {0};
	e = cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), 0);
	check("cudaDeviceGetPCIBusId", e == cudaSuccess && strlen(bus_id) == 12, err(e) + " " + bus_id);
	e = cudaSetDevice(1);
	check("cudaSetDevice(1) of one card: cudaErrorInvalidDevice", e == cudaErrorInvalidDevice, err(e));
	cudaGetLastError();
}

static void memory_loops()
{
	cudaFree(0);
	size_t free0 = 0, total = 0;
	cudaError_t e = cudaMemGetInfo(&free0, &total);
	check("cudaMemGetInfo is emuv's free and total",
	      e == cudaSuccess && free0 == emuv_free() && total == sysfs("total_vram_bytes"),
	      err(e) + " " + std::to_string(free0) + " vs " + std::to_string(emuv_free()));
	// Allocations of many sizes, each filled, read back and freed.
	bool roundtrips = true, aligned = true;
	std::string detail;
	unsigned seed = 12345;
	for (int i = 0; i < 200 && roundtrips; i++) {
		seed = seed * 1103515245 + 12345;
		size_t size = 1 + (seed >> 8) % (3 << 20);
		std::vector<unsigned char> out(size), in(size);
		for (size_t j = 0; j < size; j++)
			out[j] = (unsigned char)(j * 7 + i);
		void *d = nullptr;
		e = cudaMalloc(&d, size);
		if (e != cudaSuccess) {
			roundtrips = false;
			detail = "cudaMalloc " + err(e);
			break;
		}
		aligned &= ((uintptr_t)d % 256) == 0;
		if (cudaMemcpy(d, out.data(), size, cudaMemcpyHostToDevice) != cudaSuccess ||
		    cudaMemcpy(in.data(), d, size, cudaMemcpyDeviceToHost) != cudaSuccess || in != out) {
			roundtrips = false;
			detail = "size " + std::to_string(size);
		}
		cudaFree(d);
	}
	check("200 cudaMalloc/cudaMemcpy/cudaFree round trips", roundtrips, detail);
	check("allocations 256-byte aligned", aligned);
	size_t free1 = 0;
	cudaMemGetInfo(&free1, &total);
	check("all of it given back", free1 == free0, std::to_string(free0) + " -> " + std::to_string(free1));

	// cudaMemcpyDefault, device to device, memset, 2D copies.
	const size_t n = 1 << 20;
	unsigned char *a = nullptr, *b = nullptr;
	cudaMalloc(&a, n);
	cudaMalloc(&b, n);
	std::vector<unsigned char> host(n), back(n, 0);
	for (size_t j = 0; j < n; j++)
		host[j] = (unsigned char)(j ^ (j >> 8));
	bool ok = cudaMemcpy(a, host.data(), n, cudaMemcpyDefault) == cudaSuccess &&
		  cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice) == cudaSuccess &&
		  cudaMemcpy(back.data(), b, n, cudaMemcpyDefault) == cudaSuccess && back == host;
	check("cudaMemcpyDefault and device-to-device", ok);
	ok = cudaMemset(a + 100, 0xab, 1000) == cudaSuccess &&
	     cudaMemcpy(back.data(), a, n, cudaMemcpyDeviceToHost) == cudaSuccess;
	bool memset_ok = ok;
	for (size_t j = 0; j < n && memset_ok; j++)
		memset_ok = back[j] == ((j >= 100 && j < 1100) ? 0xab : host[j]);
	check("cudaMemset sets exactly its bytes", memset_ok);
	// A 64x32 block out of a 1024-pitch image, into a packed one.
	std::vector<unsigned char> packed(64 * 32);
	e = cudaMemcpy2D(packed.data(), 64, a + 5, 1024, 64, 32, cudaMemcpyDeviceToHost);
	bool twod = e == cudaSuccess;
	cudaMemcpy(back.data(), a, n, cudaMemcpyDeviceToHost);
	for (int r = 0; r < 32 && twod; r++)
		twod = memcmp(&packed[r * 64], &back[5 + r * 1024], 64) == 0;
	check("cudaMemcpy2D", twod, err(e));
	void *pitched = nullptr;
	size_t pitch = 0;
	e = cudaMallocPitch(&pitched, &pitch, 1000, 10);
	check("cudaMallocPitch: 1000 bytes give a 1024-byte pitch", e == cudaSuccess && pitch == 1024,
	      err(e) + " " + std::to_string(pitch));
	cudaFree(pitched);
	e = cudaMemcpy(a, host.data(), 16, (cudaMemcpyKind)7);
	check("a bad copy kind: cudaErrorInvalidMemcpyDirection", e == cudaErrorInvalidMemcpyDirection, err(e));
	cudaGetLastError();

	cudaPointerAttributes attrs;
	e = cudaPointerGetAttributes(&attrs, a);
	check("pointer attributes of device memory",
	      e == cudaSuccess && attrs.type == cudaMemoryTypeDevice && attrs.device == 0 &&
		      attrs.devicePointer == a && attrs.hostPointer == nullptr,
	      err(e) + " type " + std::to_string(attrs.type));
	e = cudaPointerGetAttributes(&attrs, host.data());
	check("pointer attributes of malloc'd memory (as driver 580: unregistered, device -2)",
	      e == cudaSuccess && attrs.type == cudaMemoryTypeUnregistered && attrs.device == -2 &&
		      attrs.devicePointer == nullptr && attrs.hostPointer == host.data(),
	      err(e) + " type " + std::to_string(attrs.type) + " device " + std::to_string(attrs.device));
	void *pinned = nullptr;
	e = cudaMallocHost(&pinned, 1 << 20);
	cudaPointerAttributes pa;
	cudaError_t e2 = cudaPointerGetAttributes(&pa, pinned);
	check("cudaMallocHost: pinned memory the CPU writes",
	      e == cudaSuccess && e2 == cudaSuccess && pa.type == cudaMemoryTypeHost && pa.hostPointer == pinned &&
		      memset(pinned, 1, 1 << 20) == pinned,
	      err(e) + " " + err(e2));
	check("cudaFreeHost", cudaFreeHost(pinned) == cudaSuccess);
	cudaFree(a);
	cudaFree(b);
}

static void symbols()
{
	int values[4] = {0, 0, 0, 0};
	cudaError_t e = cudaMemcpyFromSymbol(values, table, sizeof(values));
	check("a __device__ variable holds its initial value", e == cudaSuccess && values[0] == 1 && values[3] == 4,
	      err(e) + " " + std::to_string(values[0]) + "," + std::to_string(values[3]));
	int written[4] = {10, 20, 30, 40};
	e = cudaMemcpyToSymbol(table, written, sizeof(written));
	int read[4] = {0, 0, 0, 0};
	cudaError_t e2 = cudaMemcpyFromSymbol(read, table, sizeof(read));
	check("cudaMemcpyToSymbol then FromSymbol", e == cudaSuccess && e2 == cudaSuccess && memcmp(read, written, 16) == 0,
	      err(e) + " " + err(e2));
	e = cudaMemcpyToSymbol(table, written, 8, 8);
	cudaMemcpyFromSymbol(read, table, 4, 12);
	check("an offset into the variable", e == cudaSuccess && read[0] == 20, std::to_string(read[0]));
	size_t size = 0;
	void *address = nullptr;
	check("cudaGetSymbolSize and Address",
	      cudaGetSymbolSize(&size, table) == cudaSuccess && size == 16 &&
		      cudaGetSymbolAddress(&address, table) == cudaSuccess && address != nullptr,
	      std::to_string(size));
	e = cudaMemcpyToSymbol(table, written, 16, 4);
	check("past the variable's end: cudaErrorInvalidValue", e == cudaErrorInvalidValue, err(e));
	e = cudaMemcpyToSymbol(values, written, 4);
	check("not a symbol: cudaErrorInvalidSymbol", e == cudaErrorInvalidSymbol, err(e));
	cudaGetLastError();
	check("a __managed__ variable, read by the host", managed_answer == 42, std::to_string(managed_answer));
	managed_answer = 7;
	int from_device = 0;
	e = cudaMemcpy(&from_device, &managed_answer, sizeof(int), cudaMemcpyDefault);
	check("the host's write seen by a copy", e == cudaSuccess && from_device == 7, err(e));
}

static void streams_and_events()
{
	const size_t n = 32 << 20;
	void *d = nullptr, *h = nullptr;
	cudaMalloc(&d, n);
	cudaMallocHost(&h, n);
	memset(h, 0x5a, n);
	cudaStream_t s;
	cudaEvent_t start, stop;
	bool ok = cudaStreamCreate(&s) == cudaSuccess && cudaEventCreate(&start) == cudaSuccess &&
		  cudaEventCreate(&stop) == cudaSuccess;
	check("cudaStreamCreate, cudaEventCreate", ok);
	cudaEventRecord(start, s);
	for (int i = 0; i < 4; i++)
		cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, s);
	cudaEventRecord(stop, s);
	cudaError_t e = cudaStreamSynchronize(s);
	float ms = -1;
	cudaError_t e2 = cudaEventElapsedTime(&ms, start, stop);
	check("events time 128 MiB of copies", e == cudaSuccess && e2 == cudaSuccess && ms > 0, err(e2) + " " + std::to_string(ms));
	printf("# 4 x 32 MiB host-to-device on a stream: %.2f ms, %.2f GB/s\n", ms, (4.0 * n) / (ms * 1e6));
	check("cudaStreamQuery after synchronizing: done", cudaStreamQuery(s) == cudaSuccess);
	int priority = 99;
	check("cudaStreamGetPriority", cudaStreamGetPriority(s, &priority) == cudaSuccess && priority == 0,
	      std::to_string(priority));
	cudaStreamCaptureStatus status = cudaStreamCaptureStatusActive;
	check("no stream is capturing", cudaStreamIsCapturing(s, &status) == cudaSuccess && status == cudaStreamCaptureStatusNone);
	e = cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
	check("stream capture: cudaErrorNotSupported", e == cudaErrorNotSupported, err(e));
	cudaGetLastError();
	void *async_p = nullptr;
	e = cudaMallocAsync(&async_p, 1 << 20, s);
	e2 = cudaFreeAsync(async_p, s);
	check("cudaMallocAsync and cudaFreeAsync", e == cudaSuccess && e2 == cudaSuccess && async_p != nullptr &&
		      cudaStreamSynchronize(s) == cudaSuccess, err(e) + " " + err(e2));
	static int ran;
	e = cudaLaunchHostFunc(s, [](void *p) { *(int *)p = 1; }, &ran);
	cudaStreamSynchronize(s);
	check("cudaLaunchHostFunc runs in order", e == cudaSuccess && ran == 1, err(e));
	cudaEventDestroy(start);
	cudaEventDestroy(stop);
	check("cudaStreamDestroy", cudaStreamDestroy(s) == cudaSuccess);
	cudaFreeHost(h);
	cudaFree(d);
}

static void managed()
{
	const size_t n = 1 << 20;
	unsigned char *m = nullptr;
	cudaError_t e = cudaMallocManaged(&m, n);
	check("cudaMallocManaged", e == cudaSuccess && m != nullptr, err(e));
	if (e != cudaSuccess)
		return;
	for (size_t i = 0; i < n; i++)
		m[i] = (unsigned char)(i * 3);
	void *d = nullptr;
	cudaMalloc(&d, n);
	std::vector<unsigned char> back(n);
	bool ok = cudaMemcpy(d, m, n, cudaMemcpyDefault) == cudaSuccess &&
		  cudaMemcpy(back.data(), d, n, cudaMemcpyDeviceToHost) == cudaSuccess &&
		  memcmp(back.data(), m, n) == 0;
	check("managed memory touched by the CPU, copied on the card", ok);
	cudaPointerAttributes attrs;
	e = cudaPointerGetAttributes(&attrs, m);
	check("pointer attributes of managed memory",
	      e == cudaSuccess && attrs.type == cudaMemoryTypeManaged && attrs.devicePointer == m && attrs.hostPointer == m,
	      err(e) + " type " + std::to_string(attrs.type));
	cudaFree(d);
	check("cudaFree of managed memory", cudaFree(m) == cudaSuccess);
}

static void out_of_memory()
{
	size_t free0 = 0, total = 0;
	cudaMemGetInfo(&free0, &total);
	std::vector<void *> held;
	const size_t chunk = 64 << 20;
	cudaError_t e = cudaSuccess;
	while (held.size() < 100000) {
		void *p = nullptr;
		e = cudaMalloc(&p, chunk);
		if (e != cudaSuccess)
			break;
		held.push_back(p);
	}
	size_t got = held.size() * chunk;
	check("cudaMalloc until cudaErrorMemoryAllocation", e == cudaErrorMemoryAllocation, err(e));
	check("what fitted is the free memory, within one chunk", got <= free0 && free0 - got < chunk,
	      std::to_string(got) + " of " + std::to_string(free0));
	check("cudaGetLastError: the OOM, then cleared",
	      cudaGetLastError() == cudaErrorMemoryAllocation && cudaGetLastError() == cudaSuccess);
	void *big = nullptr;
	e = cudaMalloc(&big, 2 * total);
	check("twice the card: cudaErrorMemoryAllocation", e == cudaErrorMemoryAllocation, err(e));
	cudaGetLastError();
	for (void *p : held)
		cudaFree(p);
	size_t free1 = 0;
	cudaMemGetInfo(&free1, &total);
	check("the card is usable and empty again", free1 == free0 && free1 == emuv_free(),
	      std::to_string(free1) + " vs " + std::to_string(free0));
}

static void kernels_and_errors()
{
	int *d = nullptr;
	cudaMalloc(&d, 64 * sizeof(int));
	add_one<<<1, 64>>>(d);
	cudaError_t e = cudaGetLastError();
	check("a kernel launch: cudaErrorNotSupported", e == cudaErrorNotSupported, err(e));
	check("not sticky: the next call works", cudaDeviceSynchronize() == cudaSuccess && cudaGetLastError() == cudaSuccess);
	add_one<<<1, 2048>>>(d);
	e = cudaGetLastError();
	check("2048 threads per block: cudaErrorInvalidConfiguration", e == cudaErrorInvalidConfiguration, err(e));
	cudaFuncAttributes fa;
	e = cudaFuncGetAttributes(&fa, add_one);
	check("cudaFuncGetAttributes", e == cudaSuccess && fa.maxThreadsPerBlock > 0 && fa.binaryVersion == 89,
	      err(e) + " " + std::to_string(fa.maxThreadsPerBlock) + " " + std::to_string(fa.binaryVersion));
	int blocks = 0;
	e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, add_one, 64, 0);
	check("occupancy answered from the model", e == cudaSuccess && blocks > 0, err(e) + " " + std::to_string(blocks));
	e = cudaFuncGetAttributes(&fa, (const void *)&kernels_and_errors);
	check("not a kernel: cudaErrorInvalidDeviceFunction", e == cudaErrorInvalidDeviceFunction, err(e));
	cudaGetLastError();

	e = cudaFree((void *)0x1234);
	check("cudaFree(bogus): cudaErrorInvalidValue, as driver 580", e == cudaErrorInvalidValue, err(e));
	check("the last error is it", cudaPeekAtLastError() == cudaErrorInvalidValue &&
					      cudaGetLastError() == cudaErrorInvalidValue &&
					      cudaGetLastError() == cudaSuccess);
	check("cudaFree(p)", cudaFree(d) == cudaSuccess);
	e = cudaFree(d);
	check("cudaFree(p) again: cudaErrorInvalidValue", e == cudaErrorInvalidValue, err(e));
	cudaGetLastError();
	check("error names and strings",
	      strcmp(cudaGetErrorName(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation") == 0 &&
		      strcmp(cudaGetErrorString(cudaErrorMemoryAllocation), "out of memory") == 0 &&
		      strcmp(cudaGetErrorString(cudaErrorNotSupported), "operation not supported") == 0 &&
		      strcmp(cudaGetErrorString((cudaError_t)12345), "unrecognized error code") == 0,
	      cudaGetErrorString(cudaErrorNotSupported));
	void *p = nullptr;
	cudaMalloc(&p, 100 << 20);
	size_t free0 = 0, free1 = 0, total = 0;
	cudaMemGetInfo(&free0, &total);
	check("cudaDeviceReset", cudaDeviceReset() == cudaSuccess);
	cudaMemGetInfo(&free1, &total);
	check("the reset gave the memory back", free1 >= free0 + (100 << 20) && free1 == emuv_free(),
	      std::to_string(free0) + " -> " + std::to_string(free1));
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "NVIDIA GeForce RTX 4090";
	versions();
	properties(name);
	memory_loops();
	symbols();
	streams_and_events();
	managed();
	out_of_memory();
	kernels_and_errors();
	printf("# %d failed\n", failures);
	return failures ? 1 : 0;
}
