# SPDX-License-Identifier: GPL-2.0
"""An unchanged PyTorch script on an emulated card (run it with emuv-run): it loads a model's
weights, reads the card's memory as PyTorch and NVML see it, and runs out of memory the way the
real card would. `make demo` runs it beside emuv-smi."""

import os
import subprocess
import sys

import torch

MIB = 1 << 20
props = torch.cuda.get_device_properties(0)
print(f"{props.name}: {props.total_memory // MIB} MiB, compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs")
free, total = torch.cuda.mem_get_info()
print(f"mem_get_info: {free // MIB} MiB free of {total // MIB} MiB")

model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(8)])
weights = sum(p.numel() * p.element_size() for p in model.parameters())
reference = [p.detach().clone() for p in model.parameters()]
model.to("cuda")
print(f"model.to('cuda'): {weights // MIB} MiB of weights on the card; memory_allocated {torch.cuda.memory_allocated() // MIB} MiB")
free, _ = torch.cuda.mem_get_info()
print(f"mem_get_info: {free // MIB} MiB free")
sys.stdout.flush()
smi = os.environ.get("EMUV_SMI", "emuv-smi")
subprocess.run([smi], check=False)

try:
    torch.empty(total, dtype=torch.uint8, device="cuda")
except torch.OutOfMemoryError as e:
    print(f"torch.OutOfMemoryError: {e}")
first = next(model.parameters())
try:
    first + 1
except RuntimeError as e:
    print(f"weights + 1 (kernels do not run on emulated cards): {str(e).splitlines()[0]}")
intact = all(torch.equal(p.cpu(), r) for p, r in zip(model.parameters(), reference))
print(f"the process goes on; the weights read back from the card equal the originals: {intact}")
