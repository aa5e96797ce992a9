"""A lower bound on the GPU time of loss(h @ W.T, y), forward and backward, from the bytes and FLOPs of each
kernel: a prediction, not a measurement.

    python benchmarks/gpu_model.py              # the H200 and benchmarks/cross_entropy.py's GPU shapes

For N tokens, hidden size D, vocabulary V and b bytes per element (bf16: b = 2), every method runs the three
matmuls, 2·N·D·V FLOP each:

    z = h W^T (N, V),   dh = G W (N, D),   dW = G^T h (V, D)          G = d loss / d z

A kernel takes at least max(FLOP / peak FLOP/s, bytes / bandwidth), and kernels run one after another, so

    bound = sum over kernels of max(FLOP_k / P, bytes_k / B)

The matmuls move their operands and result (they are compute-bound at these shapes). What differs between
methods is the traffic of the (N, V) logits through memory between the matmuls, in passes of N·V·b bytes:

    eager F.cross_entropy      log_softmax reads z, writes log p; backward writes d log p (nll_loss), then
                               log_softmax_backward reads it and log p, writes G: 6 passes
    Triton CE kernel, in place forward reads z for lse, then reads z again and writes G over it: 3 passes
    fused LCE, Triton          the same 3 passes, chunk by chunk (a chunk small enough to stay in L2 would
                               beat this figure, which counts HBM)
    torch.compile              not modelled (what it fuses depends on the compiler)

Peak rates are the datasheet's dense bf16 throughput and HBM bandwidth, which no kernel reaches: a measured
time over the bound says how far a method is from the machine, not that the bound is wrong.
"""
import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str
    bf16_flops: float   # dense, FLOP/s
    bandwidth: float    # HBM, bytes/s


H200 = Device("NVIDIA H200 (SXM)", bf16_flops=989e12, bandwidth=4.8e12)
LOGIT_PASSES = {"eager (materialised logits)": 6, "Triton CE kernel (materialised logits, in place)": 3,
                "fused LCE, Triton": 3}  # the method names of benchmarks/cross_entropy.py


def matmuls(N, D, V, b):
    """(name, FLOP, bytes) of the three matmuls: operands read once, the result written once."""
    return [("z = h W^T", 2 * N * D * V, b * (N * D + V * D + N * V)),
            ("dh = G W", 2 * N * D * V, b * (N * V + V * D + N * D)),
            ("dW = G^T h", 2 * N * D * V, b * (N * V + N * D + V * D))]


def kernels(method, N, D, V, b=2):
    """(name, FLOP, bytes) of every kernel `method` runs, matmuls included; the softmax's own FLOPs are a few
    per logit, negligible beside the matmuls' 6·D per logit."""
    passes = LOGIT_PASSES[method]
    return matmuls(N, D, V, b) + [(f"{passes} passes over the logits", 0, passes * N * V * b)]


def seconds(work, device=H200):
    """The lower bound of one kernel list on `device`, in seconds."""
    return sum(max(flop / device.bf16_flops, moved / device.bandwidth) for _, flop, moved in work)


def bound_ms(method, N, D, V, b=2, device=H200):
    """The lower bound in ms, or None for a method the model does not cover."""
    return seconds(kernels(method, N, D, V, b), device) * 1e3 if method in LOGIT_PASSES else None


def three_matmul_ms(N, D, V, b=2, device=H200):
    return seconds(matmuls(N, D, V, b), device) * 1e3


def main():
    from cross_entropy import GPU_SHAPES  # noqa: PLC0415 - the benchmark's shapes, not a copy of them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    print(f"Lower bounds on {H200.name}: {H200.bf16_flops / 1e12:.0f} TFLOP/s bf16 dense, "
          f"{H200.bandwidth / 1e12:.1f} TB/s HBM\n")
    print("| N | D | V | three matmuls ms | " + " | ".join(f"{m} ms" for m in LOGIT_PASSES) + " |")
    print("|---:|---:|---:|---:|" + "---:|" * len(LOGIT_PASSES))
    for N, D, V in GPU_SHAPES:
        bounds = " | ".join(f"{bound_ms(m, N, D, V):.2f}" for m in LOGIT_PASSES)
        print(f"| {N} | {D} | {V} | {three_matmul_ms(N, D, V):.2f} | {bounds} |")


if __name__ == "__main__":
    main()
