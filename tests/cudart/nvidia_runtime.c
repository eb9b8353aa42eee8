// SPDX-License-Identifier: GPL-2.0
// Loads NVIDIA's own libcudart.so.13 (the path given) on emuv's driver, as a program that
// carries NVIDIA's runtime does, and calls it: emuv's driver must say why it cannot work and the
// runtime must answer with an error, neither crashing nor hanging
// (tests/src/bin/emuv_cudart.rs). Prints each call's result.
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: nvidia_runtime PATH-TO-NVIDIA-LIBCUDART\n");
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		printf("dlopen failed: %s\n", dlerror());
		return 1;
	}
	int (*count)(int *) = (int (*)(int *))dlsym(lib, "cudaGetDeviceCount");
	int (*alloc)(void **, size_t) = (int (*)(void **, size_t))dlsym(lib, "cudaMalloc");
	const char *(*name)(int) = (const char *(*)(int))dlsym(lib, "cudaGetErrorName");
	if (!count || !alloc || !name) {
		printf("dlsym failed\n");
		return 1;
	}
	int n = -1;
	int rc = count(&n);
	printf("cudaGetDeviceCount %d %s %d\n", rc, name(rc), n);
	void *p = NULL;
	rc = alloc(&p, 1 << 20);
	printf("cudaMalloc %d %s\n", rc, name(rc));
	return 0;
}
