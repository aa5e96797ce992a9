"""PeakMemory counts exactly the storages created and freed inside its block."""
import torch
import torch.nn.functional as F

from course_lib.memory_budget import PeakMemory


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
    assert len(set(peaks)) == 1 and peaks[0] >= 2 * 64 * 300 * 4  # the logits and their gradient, fp32
