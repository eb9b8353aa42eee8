# SPDX-License-Identifier: GPL-2.0
"""PyTorch (the CUDA 13 wheel, unchanged) on emuv's CUDA runtime, run through emuv-run.

Every check compares what PyTorch reports with what emuv's kernel module says in sysfs or
NVML (emuv-smi) says, or with what PyTorch printed on a real card
(../shared/reference/cuda/capture-580/05-torch.out). Prints one line per check, `ok - NAME` or
`not ok - NAME: DETAIL`, for tests/src/bin/emuv_cudart.rs; `# ` lines are notes.

    python torch_suite.py serve

imports torch once (under TCG that takes minutes) and then runs each request read from stdin in a
child forked before CUDA is initialised, so each sees the cards and the environment of its own
moment. A request is `MODE [ARGS] [NAME=VALUE...]` (the variables are set in the child before
CUDA starts); after it the server prints `### rc N`, N the child's exit status (-9: killed):

    card            one card: properties, memory, copies, weights, OOM, a kernel
    allocator CONF  PYTORCH_CUDA_ALLOC_CONF=CONF (given as a variable too) works
    cards N UUID    N cards; device 0 has UUID (CUDA_VISIBLE_DEVICES as a variable)
    hold MIB        holds MIB on the card, prints `holding PID`, sleeps until killed
"""

import os
import subprocess
import sys
import time

MIB = 1 << 20
GIB = 1 << 30
failures = 0


def check(name, cond, detail=""):
    global failures
    if cond:
        print(f"ok - {name}", flush=True)
    else:
        failures += 1
        print(f"not ok - {name}: {detail}", flush=True)


def sysfs(attr, card="emuv"):
    with open(f"/sys/class/emuv/{card}/{attr}") as f:
        return f.read().strip()


def emuv_free(card="emuv"):
    return int(sysfs("total_vram_bytes", card)) - int(sysfs("used_bytes", card))


def smi(*args):
    return subprocess.run([os.environ["EMUV_SMI"], *args], capture_output=True, text=True, check=True).stdout


def nvml_used_free_mib():
    """NVML's view (emuv-smi, nvidia-smi's CSV): used and free MiB of card 0."""
    line = smi("--query-gpu=memory.used,memory.free", "--format=csv,noheader,nounits").splitlines()[0]
    used, free = (int(v) for v in line.split(","))
    return used, free


def card():
    import torch

    t0 = time.time()
    check("torch.cuda.is_available()", torch.cuda.is_available())
    check("torch.cuda.device_count() is 1", torch.cuda.device_count() == 1, torch.cuda.device_count())
    print(f"# is_available + device_count: {time.time() - t0:.3f} s", flush=True)
    p = torch.cuda.get_device_properties(0)
    print(f"# get_device_properties(0): {p}", flush=True)
    check("name is the card's", p.name == sysfs("gpu_name") == torch.cuda.get_device_name(0), p.name)
    check("total_memory is the card's VRAM", p.total_memory == int(sysfs("total_vram_bytes")), p.total_memory)
    check("compute capability 8.9", (p.major, p.minor) == (8, 9) == torch.cuda.get_device_capability(0), (p.major, p.minor))
    check("128 SMs, 72 MiB L2", p.multi_processor_count == 128 and p.L2_cache_size == 72 * MIB, (p.multi_processor_count, p.L2_cache_size))

    free, total = torch.cuda.mem_get_info()
    used_mib, free_mib = nvml_used_free_mib()
    check("mem_get_info is emuv's free and total", (free, total) == (emuv_free(), int(sysfs("total_vram_bytes"))), (free, total))
    check("mem_get_info agrees with NVML", free // MIB == free_mib, (free // MIB, free_mib, used_mib))

    x = torch.empty(GIB, dtype=torch.uint8, device="cuda")
    free1, _ = torch.cuda.mem_get_info()
    check("torch.empty(1 GiB) on the card", x.is_cuda and x.data_ptr() != 0 and free - free1 >= GIB, (hex(x.data_ptr()), free - free1))
    check("memory_allocated is 1 GiB", torch.cuda.memory_allocated() == GIB, torch.cuda.memory_allocated())
    check("memory_reserved covers it", torch.cuda.memory_reserved() >= GIB, torch.cuda.memory_reserved())
    del x

    a = torch.arange(4 * MIB, dtype=torch.float32)
    g = a.to("cuda")
    check("a tensor's bytes round-trip through .to('cuda') and .cpu()", torch.equal(g.cpu(), a))
    z = torch.zeros(1000, device="cuda")
    check("torch.zeros on the card (a memset)", z.cpu().sum().item() == 0.0 and z.is_cuda)

    # A model's weights: a few hundred MiB loaded with .to('cuda') and read back byte for byte.
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(12)])
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    size = sum(v.numel() * v.element_size() for v in weights.values())
    allocated = torch.cuda.memory_allocated()
    t0 = time.time()
    model.to("cuda")
    torch.cuda.synchronize()
    took = time.time() - t0
    print(f"# model.to('cuda'): {size / MIB:.0f} MiB in {took:.3f} s", flush=True)
    same = all(torch.equal(v.cpu(), weights[k]) for k, v in model.state_dict().items())
    check(f"a {size // MIB} MiB state dict loaded and compared byte for byte", same and all(p.is_cuda for p in model.parameters()))
    check("memory_allocated grew by exactly its size", torch.cuda.memory_allocated() - allocated == size, (torch.cuda.memory_allocated() - allocated, size))
    # The caching allocator serves the weights from the segment the 1 GiB tensor left, so the
    # card's use is what PyTorch reserved (plus nothing else: no context overhead on emuv).
    free2, total = torch.cuda.mem_get_info()
    reserved = torch.cuda.memory_reserved()
    used_mib2, _ = nvml_used_free_mib()
    check("the card's used memory is what PyTorch reserved", total - free2 == reserved, (total - free2, reserved))
    check("NVML shows it", used_mib2 == reserved // MIB, (used_mib2, reserved // MIB))

    # A kernel: emuv runs none. PyTorch raises, and the process goes on.
    try:
        (g + 1).cpu()
        check("x + 1 raises: kernels do not run", False, "it ran")
    except RuntimeError as e:
        text = str(e)
        print(f"# x + 1: {text.splitlines()[0]}", flush=True)
        check("x + 1 raises: kernels do not run", "operation not supported" in text, text[:200])
    again = torch.empty(MIB, device="cuda")
    check("the process goes on after it", again.is_cuda and torch.equal(g[:10].cpu(), a[:10]))

    # Out of memory: PyTorch's own message, with the card's capacity and free memory.
    held = []
    message = ""
    try:
        while len(held) < 1000:
            held.append(torch.empty(GIB, dtype=torch.uint8, device="cuda"))
    except torch.OutOfMemoryError as e:
        message = str(e)
    free_oom, total = torch.cuda.mem_get_info()
    print(f"# OOM after {len(held)} GiB: {message}", flush=True)
    capacity = f"total capacity of {total / GIB:.2f} GiB"
    # PyTorch writes sizes up to 1 GiB in MiB (its format_size), as on the real card.
    check("filling the card ends in torch.OutOfMemoryError", message.startswith("CUDA out of memory. Tried to allocate 1024.00 MiB."), message[:120])
    check("its message names the capacity", capacity in message, capacity)
    free_text = free_oom / GIB
    check("and the free memory", f"of which {free_text:.2f} GiB is free" in message or f"of which {free_oom / MIB:.2f} MiB is free" in message, free_oom)
    in_use = (total - free_oom) / GIB
    check("and this process's use", f"this process has {in_use:.2f} GiB memory in use" in message, in_use)
    # PyTorch frees its cache and retries before it gives up: what is left is less than the 1 GiB asked.
    check("the card was full: less than 1 GiB left", 0 < len(held) and free_oom < GIB, (len(held), free_oom))
    check("PyTorch holds what fitted", torch.cuda.memory_allocated() >= len(held) * GIB, (torch.cuda.memory_allocated(), len(held)))
    summary = torch.cuda.memory_summary()
    print("# " + "\n# ".join(summary.splitlines()), flush=True)
    check("memory_summary counts the OOM", "CUDA OOMs: 1" in summary, summary[:400])
    print("# emuv-smi while the card is full:\n# " + "\n# ".join(smi().splitlines()), flush=True)
    del held
    torch.cuda.empty_cache()
    free_end, _ = torch.cuda.mem_get_info()
    used_end, _ = nvml_used_free_mib()
    check("empty_cache() gives the memory back, as NVML shows", free_end == emuv_free() and used_end * MIB <= int(sysfs("total_vram_bytes")) - free_end + MIB, (free_end, used_end))
    return failures


def allocator(conf):
    import torch

    check(f"PYTORCH_CUDA_ALLOC_CONF={conf}: the backend", torch.cuda.get_allocator_backend() == ("cudaMallocAsync" if "cudaMallocAsync" in conf else "native"), torch.cuda.get_allocator_backend())
    free0, _ = torch.cuda.mem_get_info()
    a = torch.arange(MIB, dtype=torch.float32)
    x = a.to("cuda")
    y = torch.empty(512 * MIB, dtype=torch.uint8, device="cuda")
    free1, _ = torch.cuda.mem_get_info()
    check("tensors on the card", torch.equal(x.cpu(), a) and y.is_cuda)
    check("their memory taken from the card", free0 - free1 >= 512 * MIB and free1 == emuv_free(), (free0 - free1, free1, emuv_free()))
    del x, y
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free2, _ = torch.cuda.mem_get_info()
    check("and given back", free2 >= free0 - 2 * MIB and free2 == emuv_free(), (free0, free2))
    return failures


def cards(n, uuid):
    import torch

    check(f"device_count() is {n}", torch.cuda.device_count() == n, torch.cuda.device_count())
    p = torch.cuda.get_device_properties(0)
    got = str(p.uuid).removeprefix("GPU-").replace("-", "")
    check("device 0 is the card CUDA_VISIBLE_DEVICES names", got == uuid, (got, uuid))
    for i in range(n):
        t = torch.empty(MIB, device=f"cuda:{i}")
        check(f"memory on cuda:{i}", t.device.index == i)
    return failures


def hold(mib):
    import torch

    x = torch.empty(mib * MIB, dtype=torch.uint8, device="cuda")
    assert x.is_cuda
    print(f"holding {os.getpid()}", flush=True)
    time.sleep(600)
    return 0


def run(words):
    mode, args = words[0], [w for w in words[1:] if "=" not in w]
    for word in words[1:]:
        if "=" in word:
            name, value = word.split("=", 1)
            os.environ[name] = value
    if mode == "card":
        return card()
    if mode == "allocator":
        return allocator(args[0])
    if mode == "cards":
        return cards(int(args[0]), args[1])
    if mode == "hold":
        return hold(int(args[0]))
    print(f"not ok - unknown request {words}", flush=True)
    return 1


def serve():
    t0 = time.time()
    import torch  # noqa: F401 (imported once, before any fork; CUDA is not initialised)

    print(f"# import torch: {time.time() - t0:.1f} s", flush=True)
    print("### ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 1 if run(words) else 0
            except BaseException as e:  # noqa: BLE001 (the child reports everything)
                import traceback

                traceback.print_exc()
                print(f"not ok - {words[0]} raised {type(e).__name__}: {e}", flush=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"### rc {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        sys.exit(1 if run(sys.argv[1:]) else 0)
