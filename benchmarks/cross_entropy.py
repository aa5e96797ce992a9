"""Forward+backward time and peak extra memory of loss(h @ W.T, y), computed five ways, side by side.

    python benchmarks/cross_entropy.py          # CPU: N=4096, D=256, V=32768, fp32
    python benchmarks/cross_entropy.py --gpu    # CUDA: N=8192, D in {4096, 2304}, V up to 256000, bf16

Methods: eager F.cross_entropy on materialised logits; the three matmuls alone (the floor: z = h W^T, z W,
z^T h, no loss; every method's time is also given as a multiple of it); torch.compile of eager; the chunked pure-PyTorch
fused linear cross-entropy; the Triton kernel over materialised logits (CUDA); the fused linear cross-entropy
with the Triton kernel per chunk (CUDA). Time: median of --repeats runs after --warmup runs. Memory: peak
bytes above what was live before the call (inputs and parameters), gradients of h and W included: on CUDA
torch.cuda.max_memory_allocated; on CPU the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs) with glibc told to return every block of 1 MiB or more to the system when freed.
Writes benchmarks/results/cross_entropy_{cpu,gpu}.{md,json}.
"""
import argparse
import ctypes
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_lib.fused_linear_cross_entropy import fused_linear_cross_entropy  # noqa: E402
from gpu_model import H200, bound_ms  # noqa: E402 - beside this file

RESULTS = Path(__file__).resolve().parent / "results"
CPU_SHAPES = [(4096, 256, 32768)]
GPU_SHAPES = [(8192, 4096, 32000), (8192, 4096, 128256), (8192, 4096, 256000), (8192, 2304, 256000)]


def eager(h, w, y):
    return F.cross_entropy(h @ w.T, y)


FLOOR = "3 matmuls only (no loss: the floor)"


class _ThreeMatmuls(torch.autograd.Function):
    """The work no linear cross-entropy avoids, and nothing else: z = h W^T forward, z W and z^T h backward."""

    @staticmethod
    def forward(ctx, h, w):
        z = h @ w.T
        ctx.save_for_backward(h, w, z)
        return z.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        h, w, z = ctx.saved_tensors
        return z @ w, z.T @ h


def methods(device, chunk_sweep):
    found = {"eager (materialised logits)": eager, FLOOR: lambda h, w, y: _ThreeMatmuls.apply(h, w),
             "torch.compile (materialised logits)": torch.compile(eager),
             "chunked PyTorch (fused LCE, torch)": lambda h, w, y: fused_linear_cross_entropy(h, w, y, backend="torch")}
    for rows in chunk_sweep:
        found[f"chunked PyTorch, {rows} rows"] = \
            lambda h, w, y, rows=rows: fused_linear_cross_entropy(h, w, y, backend="torch", chunk_rows=rows)
    if device.type == "cuda":
        from course_lib.triton_cross_entropy import triton_cross_entropy
        found["Triton CE kernel (materialised logits, in place)"] = \
            lambda h, w, y: triton_cross_entropy(h @ w.T, y, inplace_backward=True)
        found["fused LCE, Triton"] = lambda h, w, y: fused_linear_cross_entropy(h, w, y, backend="triton")
    return found


class CpuPeak:
    """Peak resident memory above the level at entry (Linux): frees of >= 1 MiB go back to the system."""

    def __init__(self):
        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: big blocks are mmap'ed, and unmapped when freed

    @staticmethod
    def _status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    def __enter__(self):
        gc.collect()
        self.libc.malloc_trim(0)
        self.start = self._status("VmRSS:")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        return self

    def __exit__(self, *exc):
        self.peak = self._status("VmHWM:") - self.start


class CudaPeak:
    def __enter__(self):
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated() - self.start


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(fn, h, w, y):
    h.grad = w.grad = None
    loss = fn(h, w, y)
    loss.backward()
    return loss.detach()


def measure(fn, h, w, y, warmup, repeats):
    for _ in range(warmup):
        step(fn, h, w, y)
    times = []
    for _ in range(repeats):
        sync(h.device)
        start = time.perf_counter()
        loss = step(fn, h, w, y)
        sync(h.device)
        times.append(time.perf_counter() - start)
    h.grad = w.grad = None
    with (CudaPeak() if h.device.type == "cuda" else CpuPeak()) as peak:
        loss = step(fn, h, w, y)
    grads = (h.grad.float(), w.grad.float())
    h.grad = w.grad = None
    return statistics.median(times), peak.peak, loss.float().item(), grads


def device_rates():
    """Measured bf16 matmul rate (FLOP/s) and copy bandwidth (bytes/s, read + write) of the current GPU."""
    def timed(fn, repeats=10):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    flops = 2 * 8192 ** 3 / timed(lambda: a @ b)
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() / timed(lambda: dst.copy_(src))
    del a, b, src, dst
    torch.cuda.empty_cache()
    return flops, bandwidth


def ce_kernel_bandwidth(N, V, dtype):
    """Bytes/s of the forward kernel with its in-place gradient: it reads the logits twice, writes them once."""
    from course_lib.triton_cross_entropy import cross_entropy_forward
    z = torch.randn(N, V, device="cuda", dtype=dtype)
    y = torch.randint(0, V, (N,), device="cuda")
    dloss = torch.tensor(1.0 / N, device="cuda")
    run = lambda: cross_entropy_forward(z, y, dloss=dloss, grad=z)  # noqa: E731
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 3 * z.numel() * z.element_size() / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="CUDA shapes in bf16 (else the CPU shape in fp32)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("N", "D", "V"), help="one shape instead")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-sweep", type=str, default="", help="e.g. 32,64,128: extra chunked runs")
    parser.add_argument("--out", type=str, default=None, help="file stem under benchmarks/results")
    args = parser.parse_args()
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device")
    dtype = torch.bfloat16 if args.gpu else torch.float32
    shapes = [tuple(args.shape)] if args.shape else GPU_SHAPES if args.gpu else CPU_SHAPES
    sweep = [int(r) for r in args.chunk_sweep.split(",") if r]
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {"command": "python " + " ".join([sys.argv[0]] + sys.argv[1:]),
            "device": torch.cuda.get_device_name() if args.gpu else
            f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__, "triton": triton_version, "dtype": str(dtype).removeprefix("torch."),
            "warmup": args.warmup, "repeats": args.repeats,
            "memory": "torch.cuda.max_memory_allocated" if args.gpu else "VmHWM - VmRSS (clear_refs, mmap >= 1 MiB)",
            "shapes": []}
    if args.gpu:
        flops, bandwidth = device_rates()
        info.update(bf16_matmul_tflops=flops / 1e12, copy_bandwidth_gbs=bandwidth / 1e9)
    for N, D, V in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        h = (torch.randn(N, D, device=device, generator=g) / D ** 0.25).to(dtype).requires_grad_()
        w = (torch.randn(V, D, device=device, generator=g) / D ** 0.25).to(dtype).requires_grad_()
        y = torch.randint(0, V, (N,), device=device, generator=g)
        row = {"N": N, "D": D, "V": V, "methods": []}
        if args.gpu:
            row["three_matmul_limit_ms"] = 6 * N * D * V / flops * 1e3
            try:
                row["ce_kernel_bandwidth_gbs"] = ce_kernel_bandwidth(N, V, dtype) / 1e9
                row["ce_kernel_pct_of_copy"] = 100 * row["ce_kernel_bandwidth_gbs"] * 1e9 / bandwidth
            except Exception as error:  # noqa: BLE001 - a kernel that fails to build must not lose the rest
                row["ce_kernel_error"] = f"{type(error).__name__}: {str(error)[:200]}"
                print(f"N={N} D={D} V={V} CE kernel: {row['ce_kernel_error']}", flush=True)
        reference = None
        for name, fn in methods(device, sweep).items():
            try:
                seconds, peak, loss, grads = measure(fn, h, w, y, args.warmup, args.repeats)
            except Exception as error:  # noqa: BLE001 - e.g. out of memory: record it, go on with the rest
                h.grad = w.grad = None
                row["methods"].append({"method": name, "error": f"{type(error).__name__}: {str(error)[:200]}"})
                print(f"N={N} D={D} V={V} {name}: {row['methods'][-1]['error']}", flush=True)
                if args.gpu:
                    torch.cuda.empty_cache()
                continue
            if reference is None:
                reference = (loss, grads)
            grad_error = None if name == FLOOR else \
                max(((a - b).norm() / b.norm()).item() for a, b in zip(grads, reference[1]))
            row["methods"].append({"method": name, "ms": seconds * 1e3, "peak_extra_mib": peak / 2 ** 20,
                                   "loss": loss, "loss_diff": abs(loss - reference[0]), "grad_rel_error": grad_error})
            if args.gpu and (bound := bound_ms(name, N, D, V)) is not None:
                row["methods"][-1]["h200_bound_ms"] = bound
            print(f"N={N} D={D} V={V} {name}: {seconds * 1e3:.1f} ms, {peak / 2 ** 20:.1f} MiB, loss {loss:.6f}, "
                  f"grad rel. error {grad_error if grad_error is None else f'{grad_error:.1e}'}", flush=True)
        info["shapes"].append(row)
        write(info, args.out or ("cross_entropy_gpu" if args.gpu else "cross_entropy_cpu"))  # after every shape
        del h, w, y, reference
        if args.gpu:
            torch.cuda.empty_cache()


def write(info, stem):
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = ["# Cross-entropy of h @ W.T: forward + backward", "",
             f"`{info['command']}`", "",
             f"{info['device']}; torch {info['torch']}, triton {info['triton']}; {info['dtype']}; "
             f"median of {info['repeats']} runs after {info['warmup']} warm-up; memory: {info['memory']}.", ""]
    if "bf16_matmul_tflops" in info:
        lines += [f"Measured bf16 matmul {info['bf16_matmul_tflops']:.0f} TFLOP/s, copy bandwidth "
                  f"{info['copy_bandwidth_gbs']:.0f} GB/s (read + write).", ""]
    for row in info["shapes"]:
        lines += [f"## N={row['N']}, D={row['D']}, V={row['V']}", ""]
        if "three_matmul_limit_ms" in row:
            kernel = (f"CE kernel (2 reads + 1 write of the logits): {row['ce_kernel_bandwidth_gbs']:.0f} GB/s, "
                      f"{row['ce_kernel_pct_of_copy']:.0f}% of copy bandwidth." if "ce_kernel_pct_of_copy" in row
                      else f"CE kernel failed: {row.get('ce_kernel_error')}")
            lines += [f"Three-matmul limit (6·N·D·V FLOP at that rate): {row['three_matmul_limit_ms']:.1f} ms. "
                      + kernel, ""]
        base = next((m for m in row["methods"] if "ms" in m), None)
        floor = next((m for m in row["methods"] if m["method"] == FLOOR and "ms" in m), None)
        bounded = any("h200_bound_ms" in m for m in row["methods"])
        lines += ["| method | fwd+bwd ms | × eager time | × 3 matmuls | peak extra MiB | % of eager memory | "
                  "grad rel. error |" + (" H200 bound ms | × bound |" if bounded else ""),
                  "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if bounded else "")]
        for m in row["methods"]:
            if "error" in m:
                lines.append(f"| {m['method']} | failed: {m['error'][:80]} | | | | | |" + (" | |" if bounded else ""))
                continue
            to_floor = f"{m['ms'] / floor['ms']:.2f}" if floor else ""
            error = "" if m["grad_rel_error"] is None else f"{m['grad_rel_error']:.1e}"
            bound = (f" {m['h200_bound_ms']:.1f} | {m['ms'] / m['h200_bound_ms']:.2f} |" if "h200_bound_ms" in m
                     else " | |") if bounded else ""
            lines.append(f"| {m['method']} | {m['ms']:.1f} | {m['ms'] / base['ms']:.2f} | {to_floor} | "
                         f"{m['peak_extra_mib']:.0f} | {100 * m['peak_extra_mib'] / base['peak_extra_mib']:.1f} | "
                         f"{error} |" + bound)
        if bounded:
            lines += ["", f"H200 bound: benchmarks/gpu_model.py, a lower bound from bytes and FLOPs at the "
                          f"{H200.name}'s datasheet rates, not a measurement."]
        lines.append("")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
