"""PeakMemory counts exactly the storages created and freed inside its block; chunk_rows_for_budget fits the budget."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.fused_linear_cross_entropy import fused_linear_cross_entropy
from course_lib.memory_budget import PeakMemory, chunk_rows_for_budget, logits_bytes


def test_counts_new_storages_and_their_frees():
    with PeakMemory() as memory:
        a = torch.zeros(1000)                      # 4000 bytes
        b = torch.ones(250, dtype=torch.float64)   # 2000 bytes
        assert memory.current == 6000
        del a
        assert memory.current == 2000
        del b
    assert (memory.current, memory.peak) == (0, 6000)


def test_views_in_place_results_and_inputs_add_nothing():
    x = torch.randn(100, 10)  # created outside: never counted
    with PeakMemory() as memory:
        x.mul_(2).add_(1)
        y = x.view(10, 100).t()
        z = x[:5]
        assert memory.current == 0
        w = x.exp()          # a new 4000-byte storage
        w.exp_()
        v = w[3:]            # a view keeps w's storage alive
        del w
        assert memory.current == 4000
        del v
    assert (memory.current, memory.peak) == (0, 4000)
    assert y.shape == (100, 10) and z.shape == (5, 10)


def test_autograd_saved_tensors_count_until_backward_frees_them():
    x = torch.randn(1000, requires_grad=True)
    with PeakMemory() as memory:
        loss = x.exp().sum()        # exp is saved for backward: 4000 bytes, and the 4-byte loss
        assert memory.current == 4004
        loss.backward()             # frees the graph; x.grad (4000 bytes) stays
        assert memory.current == 4004
    assert memory.peak >= 8004


def test_the_count_is_deterministic():
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(64, 8, generator=g, requires_grad=True), torch.randn(300, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 300, (64,), generator=g)
    peaks = []
    for _ in range(3):
        h.grad = w.grad = None
        with PeakMemory() as memory:
            F.cross_entropy(h @ w.T, y).backward()
        peaks.append(memory.peak)
    assert len(set(peaks)) == 1 and peaks[0] >= 2 * logits_bytes(64, 300, 4)


def test_fused_lce_in_budget_where_the_materialised_logits_are_not():
    N, D, V = 128, 8, 512
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(N, D, generator=g, requires_grad=True), torch.randn(V, D, generator=g, requires_grad=True)
    y = torch.randint(0, V, (N,), generator=g)
    budget = 32 * 1024
    rows = chunk_rows_for_budget(N, V, budget)
    assert rows == 8
    grads = 2 * (N * D + V * D) * 4  # saved in forward, returned (scaled) in backward
    with PeakMemory() as fused:
        fused_linear_cross_entropy(h, w, y, chunk_rows=rows, backend="torch").backward()
    h.grad = w.grad = None
    with PeakMemory() as eager:
        F.cross_entropy(h @ w.T, y).backward()
    assert fused.peak <= grads + budget + 8 * 1024
    assert eager.peak > logits_bytes(N, V, 4) * 2


@pytest.mark.parametrize("args, rows", [
    ((1000, 100, 8000), 10),              # 8000 // (2 * 100 * 4)
    ((1000, 100, 7999), 9),               # floor, never over budget
    ((5, 100, 10 ** 9), 5),               # at most every token
    ((1000, 100, 8000, 2), 20),           # bf16 elements
    ((1000, 100, 8000, 4, 1), 20),        # one buffer
    ((1, 128256, 2 * 128256 * 4), 1),
])
def test_chunk_rows_for_budget(args, rows):
    assert chunk_rows_for_budget(*args) == rows


def test_chunk_rows_for_budget_errors():
    with pytest.raises(ValueError, match="holds no row"):
        chunk_rows_for_budget(10, 100, 799)
    for bad in ((0, 100, 8000), (10, 100, 8000.0), (10, True, 8000)):
        with pytest.raises(ValueError, match="positive integer"):
            chunk_rows_for_budget(*bad)
