# SPDX-License-Identifier: GPL-2.0
"""`make bench`'s PyTorch figures, each measured side by side with the CPU's own baseline in one
run (scripts/bench.sh runs it in the bench VM through emuv-run, after `import torch` was timed
without CUDA in a process of its own):

- `.to('cuda')` of a 1 GiB tensor against `.clone()` of it on the CPU (one copy each);
- allocations through PyTorch's caching allocator (cached, and with `empty_cache()` each time,
  i.e. a real cudaMalloc/cudaFree pair) against the CPU allocator;
- `import torch` + `torch.cuda.init()` against `import torch` alone (given as argv[1]).

Prints a table of medians and ratios.
"""

import sys
import time

t0 = time.perf_counter()
import torch  # noqa: E402 (timed)

imported = time.perf_counter() - t0
torch.cuda.init()
cuda_ready = time.perf_counter() - t0
import_alone = float(sys.argv[1]) if len(sys.argv) > 1 else imported

MIB = 1 << 20
ROUNDS = 5


def median(f, rounds=ROUNDS):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


x = torch.empty(1 << 30, dtype=torch.uint8)
x.fill_(7)
torch.cuda.synchronize()
keep = []


def to_cuda():
    keep.append(x.to("cuda"))
    torch.cuda.synchronize()
    keep.clear()


def clone_cpu():
    keep.append(x.clone())
    keep.clear()


to_cuda()  # the caching allocator's segment, made once
t_to = median(to_cuda)
t_clone = median(clone_cpu)

SIZE = 64 * MIB
N = 200


def cached():
    for _ in range(N):
        t = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
        del t


def uncached():
    for _ in range(N // 10):
        t = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
        del t
        torch.cuda.empty_cache()


def cpu():
    for _ in range(N):
        t = torch.empty(SIZE, dtype=torch.uint8)
        del t


t_cached = median(cached) / N
t_uncached = median(uncached) / (N // 10)
t_cpu = median(cpu) / N

rows = [
    ("1 GiB .to('cuda') vs CPU .clone()", t_to, t_clone, "GB/s", (1 << 30) / t_to / 1e9, (1 << 30) / t_clone / 1e9),
    ("64 MiB torch.empty, cached, vs CPU", t_cached, t_cpu, "us", t_cached * 1e6, t_cpu * 1e6),
    ("64 MiB cudaMalloc+cudaFree (empty_cache) vs CPU", t_uncached, t_cpu, "us", t_uncached * 1e6, t_cpu * 1e6),
    ("import torch + torch.cuda.init() vs import torch", cuda_ready, import_alone, "s", cuda_ready, import_alone),
]
print(f"{'PyTorch on emuv (medians of ' + str(ROUNDS) + ')':<52} {'emuv':>12} {'baseline':>12} {'ratio':>7}")
for name, ours, base, unit, a, b in rows:
    # Throughput rows: baseline time / ours is emuv's speed as a fraction of the CPU's.
    print(f"{name:<52} {a:>9.2f} {unit:<2} {b:>9.2f} {unit:<2} {base / ours:>6.2f}x")
