# SPDX-License-Identifier: GPL-2.0
"""cuda-python (cuda.bindings.driver, unmodified) against emuv's libcuda.so.1.

Every check compares what the library answers with what NVIDIA's driver 580 answered to the
same calls (../shared/reference/cuda/capture-580) or with what emuv's kernel module says in
sysfs. Prints one line per check, `ok - NAME` or `not ok - NAME: DETAIL`, for
tests/src/bin/emuv_cuda.rs.

    python driver_suite.py driver            one card (lazy pool), the whole driver API
    python driver_suite.py cards N [ORDER]   N cards; ORDER: the kernel indices CUDA_VISIBLE_DEVICES selects
    python driver_suite.py numba             numba-cuda's device arrays
"""

import ctypes
import os
import sys
import threading

MIB = 1 << 20
CHUNK = 2 * MIB
failures = 0


def check(name, cond, detail=""):
    global failures
    if cond:
        print(f"ok - {name}", flush=True)
    else:
        failures += 1
        print(f"not ok - {name}: {detail}", flush=True)


def sysfs(card, attr):
    with open(f"/sys/class/emuv/{card}/{attr}") as f:
        return f.read().strip()


def uuids():
    """Every card's UUID in index order, as emuv's NVML derives it (emuv-smi -L)."""
    import subprocess

    out = subprocess.run([os.environ["EMUV_SMI"], "-L"], capture_output=True, text=True, check=True).stdout
    return [line.split("(UUID: GPU-")[1].rstrip(")").replace("-", "") for line in out.splitlines() if "(UUID: GPU-" in line]


def sysfs_int(card, attr):
    return int(sysfs(card, attr))


def emuv_free(card="emuv"):
    return sysfs_int(card, "total_vram_bytes") - sysfs_int(card, "used_bytes")


def cards_in_kernel_order():
    names = [n for n in os.listdir("/sys/class/emuv") if n.startswith("emuv")]
    return sorted(names, key=lambda n: int(n[4:] or 0))


def rc(result):
    """The CUresult of a call's result tuple (or bare result) as an int."""
    first = result[0] if isinstance(result, tuple) else result
    return int(first)


def driver_suite():
    from cuda.bindings import driver as cu

    E = cu.CUresult
    # Before cuInit.
    check("cuDeviceGetCount before cuInit is NOT_INITIALIZED", rc(cu.cuDeviceGetCount()) == 3)
    err, version = cu.cuDriverGetVersion()
    check("cuDriverGetVersion works before cuInit, >= 13000", rc(err) == 0 and version >= 13000, f"{err} {version}")
    check("cuInit(1) is INVALID_VALUE", rc(cu.cuInit(1)) == 1)
    check("cuInit(0)", rc(cu.cuInit(0)) == 0)

    # The card, as emuv's sysfs describes it.
    err, count = cu.cuDeviceGetCount()
    check("one device", rc(err) == 0 and count == 1, f"{err} {count}")
    err, dev = cu.cuDeviceGet(0)
    err, name = cu.cuDeviceGetName(256, dev)
    name = name.split(b"\0")[0].decode()
    check("name is the model's", name == sysfs("emuv", "gpu_name"), name)
    err, total = cu.cuDeviceTotalMem(dev)
    check("cuDeviceTotalMem is the card's VRAM", total == sysfs_int("emuv", "total_vram_bytes"), total)
    err, uuid = cu.cuDeviceGetUuid(dev)
    text = bytes(uuid.bytes).hex()
    check("UUID is NVML's", text == uuids()[0], (text, uuids()))
    err, major = cu.cuDeviceGetAttribute(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
    err, minor = cu.cuDeviceGetAttribute(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
    err, sms = cu.cuDeviceGetAttribute(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)
    check("a 4090: compute capability 8.9, 128 SMs", (major, minor, sms) == (8, 9, 128), (major, minor, sms))
    check("unknown attribute is INVALID_VALUE", rc(cu.cuDeviceGetAttribute(9999, dev)) == 1)
    check("cuDeviceGet(999) is INVALID_DEVICE", rc(cu.cuDeviceGet(999)) == 101)
    err, bus = cu.cuDeviceGetPCIBusId(32, dev)
    bus = bus.split(b"\0")[0].decode().lower()
    check("PCI bus id is the card's", sysfs("emuv", "pci_bus_id").lower().endswith(bus[-7:]), bus)

    # No context yet.
    check("cuMemAlloc without a context is INVALID_CONTEXT", rc(cu.cuMemAlloc(1024)) == 201)
    check("cuMemGetInfo without a context is INVALID_CONTEXT", rc(cu.cuMemGetInfo()) == 201)

    err, ctx = cu.cuDevicePrimaryCtxRetain(dev)
    check("cuDevicePrimaryCtxRetain", rc(err) == 0)
    check("cuCtxSetCurrent", rc(cu.cuCtxSetCurrent(ctx)) == 0)
    err, flags = cu.cuCtxGetFlags()
    check("primary context flags are MAP_HOST (8)", flags == 8, flags)
    err, api = cu.cuCtxGetApiVersion(ctx)
    check("context API version 3020", api == 3020, api)
    err, low, high = cu.cuCtxGetStreamPriorityRange()
    check("stream priorities 0..-5", (low, high) == (0, -5), (low, high))
    err, stack = cu.cuCtxGetLimit(cu.CUlimit.CU_LIMIT_STACK_SIZE)
    err2, heap = cu.cuCtxGetLimit(cu.CUlimit.CU_LIMIT_MALLOC_HEAP_SIZE)
    check("limits as the real driver's", (stack, heap) == (1024, 8 * MIB), (stack, heap))

    def other_thread(out):
        out.append(rc(cu.cuMemAlloc(1024)))

    seen = []
    t = threading.Thread(target=other_thread, args=(seen,))
    t.start()
    t.join()
    check("a new thread has no current context", seen == [201], seen)

    # cuMemGetInfo is the kernel's count.
    err, free, total = cu.cuMemGetInfo()
    check("cuMemGetInfo is emuv's free and total", (free, total) == (emuv_free(), sysfs_int("emuv", "total_vram_bytes")), (free, total))
    start_free = free

    # Allocation sizes and addresses, as measured on driver 580.
    sizes = [1, 100, 512, 4096, 65536, 1048576, 1048577, 2097152, 3145728, 67108864]
    ptrs, frees = [], []
    for size in sizes:
        err, p = cu.cuMemAlloc(size)
        ptrs.append(int(p))
        frees.append(cu.cuMemGetInfo()[1])
        err, base, length = cu.cuMemGetAddressRange(p)
        if int(base) != int(p) or length != size:
            check(f"address range of a {size}-byte allocation", False, (hex(int(base)), length))
    deltas = [ptrs[i + 1] - ptrs[i] for i in range(5)]
    check("small allocations are packed at 512-byte steps", deltas == [512, 512, 512, 4096, 65536], deltas)
    check("the first small allocation costs one 2 MiB chunk", start_free - frees[0] == CHUNK and frees[5] == frees[0], (start_free - frees[0], frees[5] - frees[0]))
    check("the first allocation is 2 MiB aligned", ptrs[0] % CHUNK == 0, hex(ptrs[0]))
    costs = [frees[i - 1] - frees[i] for i in range(6, 10)]
    check("1 MiB + 1, 2 MiB, 3 MiB, 64 MiB cost 2, 2, 4, 64 MiB", costs == [CHUNK, CHUNK, 2 * CHUNK, 64 * MIB], costs)
    check("large allocations are 2 MiB aligned", all(p % CHUNK == 0 for p in ptrs[6:]), [hex(p) for p in ptrs[6:]])
    check("the kernel counts it: cuMemGetInfo == sysfs", frees[-1] == emuv_free(), (frees[-1], emuv_free()))

    # The CPU cannot touch device memory: a child process tries.
    pid = os.fork()
    if pid == 0:
        os.close(1)
        ctypes.string_at(ptrs[7], 1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    check("a CPU read of a device pointer is SIGSEGV", os.WIFSIGNALED(status) and os.WTERMSIG(status) == 11, status)

    for p in ptrs:
        cu.cuMemFree(p)
    err, free, _ = cu.cuMemGetInfo()
    check("frees give every chunk back", free == start_free, start_free - free)
    err, p, pitch = cu.cuMemAllocPitch(1000, 10, 4)
    check("cuMemAllocPitch(1000 x 10, 4) pitch 1024", rc(err) == 0 and pitch == 1024, (err, pitch))
    cu.cuMemFree(p)

    # Copies and memsets.
    err, d1 = cu.cuMemAlloc(MIB)
    err, d2 = cu.cuMemAlloc(2 * MIB)
    data = bytes(range(256)) * 4096
    ok = rc(cu.cuMemcpyHtoD(d1, data, MIB)) == 0 and rc(cu.cuMemcpyDtoD(d2, d1, MIB)) == 0
    back = bytearray(MIB)
    ok = ok and rc(cu.cuMemcpyDtoH(back, d2, MIB)) == 0
    check("HtoD, DtoD, DtoH round trip", ok and bytes(back) == data)
    check("cuMemsetD8", rc(cu.cuMemsetD8(d1, 0xAB, 4096)) == 0)
    out = bytearray(8)
    cu.cuMemcpyDtoH(out, d1, 8)
    check("memsetD8 reads back", bytes(out) == b"\xab" * 8, out.hex())
    cu.cuMemsetD32(d1, 0x01020304, 16)
    cu.cuMemcpyDtoH(out, d1, 8)
    check("memsetD32 reads back 0403020104030201", out.hex() == "0403020104030201", out.hex())
    check("cuMemsetD32 on an unaligned pointer is INVALID_VALUE", rc(cu.cuMemsetD32(int(d1) + 2, 0, 4)) == 1)
    err, base, size = cu.cuMemGetAddressRange(int(d1) + 12345)
    check("address range of an interior pointer", (int(base), size) == (int(d1), MIB), (hex(int(base)), size))
    check("copy across an allocation's end is INVALID_VALUE", rc(cu.cuMemcpyHtoD(int(d1) + MIB - 16, data, 64)) == 1)
    check("read across an allocation's end is INVALID_VALUE", rc(cu.cuMemcpyDtoH(back, int(d2) + 2 * MIB - 2048, 4096)) == 1)
    check("copy to a bogus pointer is INVALID_VALUE", rc(cu.cuMemcpyHtoD(0xDEAD0000, data, 16)) == 1)
    check("copy to NULL is INVALID_VALUE", rc(cu.cuMemcpyHtoD(0, data, 16)) == 1)
    check("a 0-byte copy succeeds", rc(cu.cuMemcpyHtoD(d1, data, 0)) == 0)
    check("memset of a bogus pointer is INVALID_VALUE", rc(cu.cuMemsetD8(0xDEAD0000, 0, 16)) == 1)
    host = ctypes.create_string_buffer(64)
    check("unified cuMemcpy device to host", rc(cu.cuMemcpy(ctypes.addressof(host), d1, 8)) == 0 and host.raw[:8].hex() == "0403020104030201", host.raw[:8].hex())

    # Frees the real driver refuses.
    check("cuMemFree(0) succeeds", rc(cu.cuMemFree(0)) == 0)
    check("cuMemFree of a bogus pointer is INVALID_VALUE", rc(cu.cuMemFree(0xDEAD0000)) == 1)
    check("cuMemFree of an interior pointer is INVALID_VALUE", rc(cu.cuMemFree(int(d1) + 256)) == 1)
    err, a = cu.cuMemAlloc(4096)
    cu.cuMemFree(a)
    check("double free is INVALID_VALUE", rc(cu.cuMemFree(a)) == 1)
    check("address range of a freed pointer is NOT_FOUND", rc(cu.cuMemGetAddressRange(a)) == 500)
    check("copy from a freed pointer is INVALID_VALUE", rc(cu.cuMemcpyDtoH(back, a, 16)) == 1)
    check("pointer attribute of a freed pointer is INVALID_VALUE", rc(cu.cuPointerGetAttribute(cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a)) == 1)

    # Out of memory leaves the context usable.
    check("cuMemAlloc(2 * total) is OUT_OF_MEMORY", rc(cu.cuMemAlloc(2 * total)) == 2)
    check("cuMemAlloc(2^64 - 1) is OUT_OF_MEMORY", rc(cu.cuMemAlloc((1 << 64) - 1)) == 2)
    check("cuMemAlloc(0) is INVALID_VALUE", rc(cu.cuMemAlloc(0)) == 1)
    err, p = cu.cuMemAlloc(MIB)
    check("the context is usable after OOM", rc(err) == 0 and rc(cu.cuCtxSynchronize()) == 0)
    cu.cuMemFree(p)

    # Pointer attributes.
    A = cu.CUpointer_attribute
    ga = lambda attr, p: cu.cuPointerGetAttribute(attr, p)
    err, t = ga(A.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, d1)
    check("device memory is MEMORYTYPE_DEVICE", rc(err) == 0 and int(t) == 2, (err, t))
    err, c = ga(A.CU_POINTER_ATTRIBUTE_CONTEXT, d1)
    check("its context is the primary context", rc(err) == 0 and int(c) == int(ctx), (err, c))
    check("no host pointer for device memory", rc(ga(A.CU_POINTER_ATTRIBUTE_HOST_POINTER, d1)) == 1)
    err, start = ga(A.CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, int(d1) + 100)
    err2, size = ga(A.CU_POINTER_ATTRIBUTE_RANGE_SIZE, int(d1) + 100)
    check("range start and size", (int(start), size) == (int(d1), MIB), (start, size))
    err, b1 = ga(A.CU_POINTER_ATTRIBUTE_BUFFER_ID, d1)
    err, b2 = ga(A.CU_POINTER_ATTRIBUTE_BUFFER_ID, d2)
    check("buffer ids differ", b1 != b2 and b1 > 0, (b1, b2))
    err, sync = ga(A.CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, d1)
    err2, ipc = ga(A.CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, d1)
    err3, managed = ga(A.CU_POINTER_ATTRIBUTE_IS_MANAGED, d1)
    check("SYNC_MEMOPS, LEGACY_IPC true; IS_MANAGED false", (bool(sync), bool(ipc), bool(managed)) == (True, True, False), (sync, ipc, managed))
    err, tokens = ga(A.CU_POINTER_ATTRIBUTE_P2P_TOKENS, d1)
    check("P2P tokens {0, 65024}", rc(err) == 0 and (tokens.p2pToken, tokens.vaSpaceToken) == (0, 65024), err)
    check("malloc'd host memory has no attributes", rc(ga(A.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, ctypes.addressof(host))) == 1)

    # Pinned and registered host memory.
    err, pinned = cu.cuMemAllocHost(MIB)
    check("cuMemAllocHost", rc(err) == 0)
    err, t = ga(A.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, pinned)
    check("pinned memory is MEMORYTYPE_HOST", int(t) == 1, t)
    err, dp = cu.cuMemHostGetDevicePointer(pinned, 0)
    check("its device pointer is its host pointer", rc(err) == 0 and int(dp) == pinned, (err, dp))
    err, flags = cu.cuMemHostGetFlags(pinned)
    check("cuMemHostGetFlags(pinned) is DEVICEMAP (2)", flags == 2, flags)
    ctypes.memset(pinned, 0x5A, 4096)
    cu.cuMemcpyHtoD(d1, pinned, 4096)
    cu.cuMemcpyDtoH(out, d1, 8)
    check("copies from pinned memory", bytes(out) == b"\x5a" * 8, out.hex())
    check("cuMemFreeHost", rc(cu.cuMemFreeHost(pinned)) == 0)
    check("cuMemFreeHost of a bogus pointer is INVALID_VALUE", rc(cu.cuMemFreeHost(0xDEAD0000)) == 1)
    reg = ctypes.create_string_buffer(MIB)
    check("cuMemHostRegister", rc(cu.cuMemHostRegister(ctypes.addressof(reg), MIB, 0)) == 0)
    check("registering it again is HOST_MEMORY_ALREADY_REGISTERED", rc(cu.cuMemHostRegister(ctypes.addressof(reg), MIB, 0)) == 712)
    err, t = ga(A.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, ctypes.addressof(reg))
    check("registered memory is MEMORYTYPE_HOST", int(t) == 1, t)
    check("cuMemHostUnregister", rc(cu.cuMemHostUnregister(ctypes.addressof(reg))) == 0)
    check("unregistering it again is HOST_MEMORY_NOT_REGISTERED", rc(cu.cuMemHostUnregister(ctypes.addressof(reg))) == 713)

    # Managed memory: one pointer for both sides.
    before = cu.cuMemGetInfo()[1]
    err, m = cu.cuMemAllocManaged(MIB, cu.CUmemAttach_flags.CU_MEM_ATTACH_GLOBAL.value)
    check("cuMemAllocManaged", rc(err) == 0 and int(m) % CHUNK == 0, (err, hex(int(m))))
    check("managed memory is the card's (2 MiB)", before - cu.cuMemGetInfo()[1] == CHUNK)
    err, managed = ga(A.CU_POINTER_ATTRIBUTE_IS_MANAGED, m)
    check("IS_MANAGED true", bool(managed))
    ctypes.memset(int(m), 0x42, 4096)
    cu.cuMemcpyDtoH(out, m, 8)
    check("the device sees what the host wrote", bytes(out) == b"\x42" * 8, out.hex())
    cu.cuMemsetD8(m, 0x11, 4096)
    cu.cuCtxSynchronize()
    check("the host sees the device's memset", ctypes.string_at(int(m), 4) == b"\x11" * 4)
    check("cuMemFree(managed)", rc(cu.cuMemFree(m)) == 0 and cu.cuMemGetInfo()[1] == before)

    # 3-D copies: a 16 x 4 x 3 box out of a 64 x 8 x 4 volume and back.
    err, vol = cu.cuMemAlloc(64 * 8 * 4)
    src = bytes(range(256)) * 8
    def c3(kind_src, kind_dst, s_host, s_dev, d_host, d_dev, x, y, z, pitch, height):
        p = cu.CUDA_MEMCPY3D()
        p.srcMemoryType, p.dstMemoryType = kind_src, kind_dst
        if s_host is not None:
            p.srcHost = s_host
        else:
            p.srcDevice = s_dev
        if d_host is not None:
            p.dstHost = d_host
        else:
            p.dstDevice = d_dev
        p.srcXInBytes, p.srcY, p.srcZ, p.srcPitch, p.srcHeight = x, y, z, pitch, height
        p.dstXInBytes, p.dstY, p.dstZ, p.dstPitch, p.dstHeight = x, y, z, pitch, height
        p.WidthInBytes, p.Height, p.Depth = 16, 4, 3
        return p
    MT = cu.CUmemorytype
    host_in = ctypes.create_string_buffer(src, 64 * 8 * 4)
    host_out = ctypes.create_string_buffer(64 * 8 * 4)
    up = c3(MT.CU_MEMORYTYPE_HOST, MT.CU_MEMORYTYPE_DEVICE, ctypes.addressof(host_in), None, None, vol, 8, 2, 1, 64, 8)
    down = c3(MT.CU_MEMORYTYPE_DEVICE, MT.CU_MEMORYTYPE_HOST, None, vol, ctypes.addressof(host_out), None, 8, 2, 1, 64, 8)
    ok = rc(cu.cuMemsetD8(vol, 0, 64 * 8 * 4)) == 0 and rc(cu.cuMemcpy3D(up)) == 0 and rc(cu.cuMemcpy3D(down)) == 0
    want = bytearray(64 * 8 * 4)
    for z in range(1, 4):
        for y in range(2, 6):
            o = (z * 8 + y) * 64 + 8
            want[o:o + 16] = src[o:o + 16]
    check("cuMemcpy3D moves the box and only the box", ok and host_out.raw == bytes(want))
    # 2-D: the same 16 x 4 box, in slice 0.
    p2 = cu.CUDA_MEMCPY2D()
    p2.srcMemoryType, p2.dstMemoryType = MT.CU_MEMORYTYPE_HOST, MT.CU_MEMORYTYPE_DEVICE
    p2.srcHost, p2.dstDevice = ctypes.addressof(host_in), vol
    p2.srcXInBytes, p2.srcY, p2.srcPitch = 8, 2, 64
    p2.dstXInBytes, p2.dstY, p2.dstPitch = 8, 2, 64
    p2.WidthInBytes, p2.Height = 16, 4
    whole = bytearray(64 * 8 * 4)
    ok = rc(cu.cuMemsetD8(vol, 0, 64 * 8 * 4)) == 0 and rc(cu.cuMemcpy2D(p2)) == 0 and rc(cu.cuMemcpyDtoH(whole, vol, len(whole))) == 0
    want2 = bytearray(64 * 8 * 4)
    for y in range(2, 6):
        o = y * 64 + 8
        want2[o:o + 16] = src[o:o + 16]
    check("cuMemcpy2D moves the rectangle and only it", ok and bytes(whole) == bytes(want2))
    p2.dstY = 30
    check("a 2-D copy past the allocation's end is INVALID_VALUE", rc(cu.cuMemcpy2D(p2)) == 1)
    check("cuMemsetD2D32 on a rectangle", rc(cu.cuMemsetD2D32(vol, 64, 0x01010101, 4, 4)) == 0 and rc(cu.cuMemsetD2D32(vol, 64, 0, 4, 40)) == 1)
    big_box = c3(MT.CU_MEMORYTYPE_HOST, MT.CU_MEMORYTYPE_DEVICE, ctypes.addressof(host_in), None, None, vol, 8, 6, 1, 64, 8)
    check("a 3-D box past the allocation's end is INVALID_VALUE", rc(cu.cuMemcpy3D(big_box)) == 1)
    cu.cuMemFree(vol)

    # Streams and events.
    err, s = cu.cuStreamCreate(0)
    err, s2 = cu.cuStreamCreate(cu.CUstream_flags.CU_STREAM_NON_BLOCKING.value)
    err, e1 = cu.cuEventCreate(0)
    err, e2 = cu.cuEventCreate(0)
    big = bytes(8 * MIB)
    err, d8 = cu.cuMemAlloc(8 * MIB)
    cu.cuEventRecord(e1, s)
    codes = [rc(cu.cuMemcpyHtoDAsync(d8, big, 8 * MIB, s)),
             rc(cu.cuMemsetD8Async(d8, 7, 8 * MIB, s)),
             rc(cu.cuMemcpyDtoDAsync(d1, d8, MIB, s))]
    back = bytearray(MIB)
    codes.append(rc(cu.cuMemcpyDtoHAsync(back, d1, MIB, s)))
    cu.cuEventRecord(e2, s)
    check("async copies and memset are accepted", codes == [0, 0, 0, 0], codes)
    check("cuStreamWaitEvent", rc(cu.cuStreamWaitEvent(s2, e2, 0)) == 0)
    check("cuStreamSynchronize", rc(cu.cuStreamSynchronize(s)) == 0)
    check("the stream ran in order", bytes(back) == b"\x07" * MIB)
    check("cuEventQuery after sync", rc(cu.cuEventQuery(e2)) == 0)
    err, ms = cu.cuEventElapsedTime(e1, e2)
    check("cuEventElapsedTime", rc(err) == 0 and ms >= 0, (err, ms))
    err, f = cu.cuStreamGetFlags(s2)
    check("cuStreamGetFlags(non-blocking) is 1", f == 1, f)
    check("cuStreamQuery of the legacy stream", rc(cu.cuStreamQuery(0)) == 0)
    check("cuStreamWriteValue32", rc(cu.cuStreamWriteValue32(s, d1, 0xCAFEF00D, 0)) == 0 and rc(cu.cuStreamSynchronize(s)) == 0)
    cu.cuMemcpyDtoH(out, d1, 8)
    check("the stream wrote it", out[:4].hex() == "0df0feca", out.hex())
    check("cuStreamDestroy", rc(cu.cuStreamDestroy(s)) == 0 and rc(cu.cuStreamDestroy(s2)) == 0)
    cu.cuMemFree(d8)

    # The stream-ordered allocator.
    err, pool = cu.cuDeviceGetDefaultMemPool(dev)
    err2, pool2 = cu.cuDeviceGetMemPool(dev)
    check("default pool", rc(err) == 0 and int(pool) == int(pool2))
    err, s = cu.cuStreamCreate(0)
    before = cu.cuMemGetInfo()[1]
    err, ap = cu.cuMemAllocAsync(8 * MIB, s)
    PA = cu.CUmemPool_attribute
    reserved = cu.cuMemPoolGetAttribute(pool, PA.CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)[1]
    used = cu.cuMemPoolGetAttribute(pool, PA.CU_MEMPOOL_ATTR_USED_MEM_CURRENT)[1]
    check("8 MiB from the pool reserves 32 MiB", (int(reserved), int(used)) == (32 * MIB, 8 * MIB), (reserved, used))
    check("the reservation is the card's", before - cu.cuMemGetInfo()[1] == 32 * MIB)
    err, c = ga(A.CU_POINTER_ATTRIBUTE_CONTEXT, ap)
    err2, ph = ga(A.CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, ap)
    check("pool memory: no context, its pool", int(c) == 0 and int(ph) == int(pool), (c, ph))
    cu.cuMemsetD8Async(ap, 1, 8 * MIB, s)
    check("cuMemFreeAsync", rc(cu.cuMemFreeAsync(ap, s)) == 0)
    cu.cuStreamSynchronize(s)
    reserved = cu.cuMemPoolGetAttribute(pool, PA.CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)[1]
    check("after free and sync the pool releases it", int(reserved) == 0 and cu.cuMemGetInfo()[1] == before, reserved)
    check("cuMemAllocAsync(2 * total) is OUT_OF_MEMORY", rc(cu.cuMemAllocAsync(2 * total, s)) == 2)
    props = cu.CUmemPoolProps()
    props.allocType = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    props.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    props.location.id = int(dev)
    err, mine = cu.cuMemPoolCreate(props)
    check("cuMemPoolCreate", rc(err) == 0 and int(mine) != int(pool), (err, mine))
    err, ap = cu.cuMemAllocFromPoolAsync(MIB, mine, s)
    err2, ph = ga(A.CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, ap)
    check("cuMemAllocFromPoolAsync: from the pool named", rc(err) == 0 and int(ph) == int(mine), (err, ph))
    cu.cuMemFreeAsync(ap, s)
    cu.cuStreamSynchronize(s)
    check("cuMemPoolDestroy", rc(cu.cuMemPoolDestroy(mine)) == 0 and cu.cuMemGetInfo()[1] == before)
    check("destroying the default pool is INVALID_VALUE", rc(cu.cuMemPoolDestroy(pool)) == 1)
    cu.cuStreamDestroy(s)
    err, g = cu.cuMemGetAllocationGranularity(_prop(cu, dev), cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM)
    check("VMM granularity 2 MiB", rc(err) == 0 and g == CHUNK, (err, g))

    # Virtual memory management: physical memory from the card, mapped into reserved addresses.
    before = cu.cuMemGetInfo()[1]
    err, va = cu.cuMemAddressReserve(8 * MIB, 0, 0, 0)
    check("cuMemAddressReserve", rc(err) == 0 and int(va) % CHUNK == 0, (err, va))
    err, handle = cu.cuMemCreate(4 * MIB, _prop(cu, dev), 0)
    check("cuMemCreate(4 MiB) takes 4 MiB of the card", rc(err) == 0 and before - cu.cuMemGetInfo()[1] == 4 * MIB, err)
    check("cuMemCreate of a size not a granule multiple is INVALID_VALUE", rc(cu.cuMemCreate(MIB, _prop(cu, dev), 0)) == 1)
    at = int(va) + CHUNK
    check("cuMemMap", rc(cu.cuMemMap(at, 4 * MIB, 0, handle, 0)) == 0)
    check("cuMemMap over a mapping is INVALID_VALUE", rc(cu.cuMemMap(at, CHUNK, 0, handle, 0)) == 1)
    desc = cu.CUmemAccessDesc()
    desc.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    desc.location.id = int(dev)
    desc.flags = cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
    check("cuMemSetAccess", rc(cu.cuMemSetAccess(at, 4 * MIB, [desc], 1)) == 0)
    block = bytes([9]) * (4 * MIB)
    back4 = bytearray(4 * MIB)
    ok = rc(cu.cuMemcpyHtoD(at, block, 4 * MIB)) == 0 and rc(cu.cuMemcpyDtoH(back4, at, 4 * MIB)) == 0
    check("copies through a mapping", ok and bytes(back4) == block)
    check("a copy to reserved but unmapped addresses is INVALID_VALUE", rc(cu.cuMemcpyHtoD(int(va), block, 16)) == 1)
    err, t = cu.cuPointerGetAttribute(cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, at)
    check("mapped memory is MEMORYTYPE_DEVICE", rc(err) == 0 and int(t) == 2, (err, t))
    check("cuMemRelease while mapped keeps the memory", rc(cu.cuMemRelease(handle)) == 0 and before - cu.cuMemGetInfo()[1] == 4 * MIB)
    check("cuMemUnmap gives it back", rc(cu.cuMemUnmap(at, 4 * MIB)) == 0 and cu.cuMemGetInfo()[1] == before)
    check("cuMemAddressFree", rc(cu.cuMemAddressFree(va, 8 * MIB)) == 0)

    # Modules are kept, not run.
    ptx = b"""
.version 8.0
.target sm_80
.address_size 64
.global .align 4 .b8 table[64];
.visible .entry scale(.param .u64 p) { ret; }
\0"""
    err, mod = cu.cuModuleLoadData(ptx)
    check("cuModuleLoadData(PTX)", rc(err) == 0, err)
    err, fn = cu.cuModuleGetFunction(mod, b"scale")
    check("cuModuleGetFunction", rc(err) == 0, err)
    check("an unknown kernel is NOT_FOUND", rc(cu.cuModuleGetFunction(mod, b"nope")) == 500)
    err, gp, gsize = cu.cuModuleGetGlobal(mod, b"table")
    check("cuModuleGetGlobal: real memory of the variable's size", rc(err) == 0 and gsize == 64 and rc(cu.cuMemsetD8(gp, 3, 64)) == 0, (err, gsize))
    err, n = cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(fn, 256, 0)
    check("occupancy: 6 blocks of 256 threads per SM (1536 threads per Ada SM)", rc(err) == 0 and n == 6, (err, n))
    err = cu.cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, 0, 0, 0)
    check("cuLaunchKernel is NOT_SUPPORTED", rc(err) == 801, err)
    check("cuModuleLoadData(garbage) is INVALID_IMAGE", rc(cu.cuModuleLoadData(b"\x7fELF" + b"\0" * 60)) == 200)
    check("cuModuleUnload", rc(cu.cuModuleUnload(mod)) == 0)

    # Entry points.
    err, pfn, status = cu.cuGetProcAddress(b"cuMemAlloc", 12000, 0)
    check("cuGetProcAddress(cuMemAlloc)", rc(err) == 0 and int(pfn) != 0 and int(status) == 0, (err, pfn, status))
    err, pfn, status = cu.cuGetProcAddress(b"cuGraphCreate", 12000, 0)
    check("what is not implemented is absent (NULL, SYMBOL_NOT_FOUND)", rc(err) == 0 and int(pfn) == 0 and int(status) == 1, (err, pfn, status))
    err, pfn, status = cu.cuGetProcAddress(b"cuMemAllocAsync", 11000, 0)
    check("too old a version is VERSION_NOT_SUFFICIENT", int(pfn) == 0 and int(status) == 2, (err, pfn, status))
    check("cuGetExportTable is INVALID_VALUE", rc(cu.cuGetExportTable(cu.CUuuid())) == 1)

    cu.cuMemFree(d1)
    cu.cuMemFree(d2)
    err, free, _ = cu.cuMemGetInfo()
    check("everything freed: the card is as it was", free == start_free, (free, start_free))
    # Left allocated: the context's end frees it.
    cu.cuMemAlloc(4 * MIB)
    cu.cuMemAlloc(1000)
    check("cuDevicePrimaryCtxRelease", rc(cu.cuDevicePrimaryCtxRelease(dev)) == 0)
    check("releasing the primary context frees its memory", emuv_free() == start_free, (emuv_free(), start_free))
    check("the released context, still current, is CONTEXT_IS_DESTROYED", rc(cu.cuMemAlloc(1024)) == 709)


def _prop(cu, dev):
    prop = cu.CUmemAllocationProp()
    prop.type = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    prop.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    prop.location.id = int(dev)
    return prop


def cards_suite(expected, order):
    """N cards; `order`: the kernel indices of the cards CUDA_VISIBLE_DEVICES selected, in order."""
    from cuda.bindings import driver as cu

    check("cuInit(0)", rc(cu.cuInit(0)) == 0)
    err, count = cu.cuDeviceGetCount()
    check(f"{expected} devices", count == expected, count)
    names = cards_in_kernel_order()
    for i, kernel_index in enumerate(order):
        err, dev = cu.cuDeviceGet(i)
        err, uuid = cu.cuDeviceGetUuid(dev)
        want = uuids()[kernel_index]
        check(f"device {i} is card {kernel_index}", bytes(uuid.bytes).hex() == want)
        err, total = cu.cuDeviceTotalMem(dev)
        check(f"device {i} has card {kernel_index}'s memory", total == sysfs_int(names[kernel_index], "total_vram_bytes"), total)
    if order:
        # Memory goes to the card the context is on.
        last = len(order) - 1
        err, dev = cu.cuDeviceGet(last)
        err, ctx = cu.cuDevicePrimaryCtxRetain(dev)
        cu.cuCtxSetCurrent(ctx)
        card = names[order[last]]
        before = emuv_free(card)
        err, p = cu.cuMemAlloc(64 * MIB)
        check(f"an allocation on device {last} is card {order[last]}'s", before - emuv_free(card) == 64 * MIB, before - emuv_free(card))
        err, free, total = cu.cuMemGetInfo()
        check(f"cuMemGetInfo on device {last} is card {order[last]}'s", free == emuv_free(card), (free, emuv_free(card)))
        cu.cuMemFree(p)
        cu.cuDevicePrimaryCtxRelease(dev)


def numba_suite():
    import numpy as np
    from numba import cuda

    check("numba sees the card (is_available: a driver, a device and NVVM)", cuda.is_available() and len(cuda.gpus) == 1)
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    check("numba: name and compute capability", name == sysfs("emuv", "gpu_name") and dev.compute_capability == (8, 9), (name, dev.compute_capability))
    free0, total = cuda.current_context().get_memory_info()
    check("numba: memory info is emuv's", (free0, total) == (emuv_free(), sysfs_int("emuv", "total_vram_bytes")), (free0, total))
    host = np.arange(4 * MIB // 8, dtype=np.float64)
    d = cuda.to_device(host)
    free1, _ = cuda.current_context().get_memory_info()
    check("numba: a 4 MiB array takes 4 MiB of the card", free0 - free1 == 4 * MIB, free0 - free1)
    back = d.copy_to_host()
    check("numba: to_device / copy_to_host round trip", np.array_equal(back, host))
    z = cuda.device_array(1000, dtype=np.int32)
    z.copy_to_device(np.full(1000, 7, dtype=np.int32))
    check("numba: device_array copy", int(z.copy_to_host().sum()) == 7000)
    check("numba: cuda.detect()", cuda.detect())
    # A kernel compiles (NVVM) and loads, but does not run: emuv's error, and the process goes on.
    @cuda.jit
    def add_one(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] += 1

    try:
        add_one[4, 256](z)
        cuda.synchronize()
        launched = "ran"
    except Exception as e:  # numba's CudaAPIError carries the driver's code
        launched = f"{type(e).__name__}: {e}"
    check("numba: a @cuda.jit launch fails with CUDA_ERROR_NOT_SUPPORTED", "801" in launched or "NOT_SUPPORTED" in launched, launched)
    check("numba: the process goes on after it", int(z.copy_to_host().sum()) == 7000)
    del d, z
    cuda.current_context().deallocations.clear()
    cuda.synchronize()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "driver"
    try:
        if mode == "driver":
            driver_suite()
        elif mode == "cards":
            expected = int(sys.argv[2])
            order = [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 and sys.argv[3] else []
            cards_suite(expected, order)
        elif mode == "numba":
            numba_suite()
    except Exception as e:  # a crash of the suite is a failure, with its trace
        import traceback

        traceback.print_exc()
        check(f"{mode} suite ran to the end", False, repr(e))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
