"""course_lib.calibration against a direct loop over bins in fp64, plus hand-worked examples (notebook 04)."""
import pytest
import torch

from course_lib import calibration as cal


def _loop_ece(probs, targets, n_bins):
    """The definition written out bin by bin, right-closed ((b-1)/n, b/n], in float64."""
    probs = probs.double()
    conf, pred = probs.max(1)
    correct = (pred == targets).double()
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            total += inside.double().mean() * (correct[inside].mean() - conf[inside].mean()).abs()
    return torch.as_tensor(total, dtype=torch.float64)


def _two_class(confidences, correct):
    """Rows (c, 1 - c) predicting class 0; target 0 when correct, else 1."""
    c = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([c, 1 - c], 1), torch.tensor([0 if ok else 1 for ok in correct])


def test_worked_example():
    probs, targets = _two_class([0.9, 0.9, 0.8, 0.6, 0.55, 0.7], [1, 1, 0, 1, 0, 1])
    # bin (0.75, 1]: acc 2/3, conf 0.8667; bin (0.5, 0.75]: acc 2/3, conf 0.6167 -> 0.5 * 0.2 + 0.5 * 0.05
    torch.testing.assert_close(cal.expected_calibration_error(probs, targets, n_bins=4),
                               torch.tensor(0.125, dtype=torch.float64))


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin_and_one_to_the_last():
    probs, targets = _two_class([0.75, 0.9], [0, 1])
    # right-closed: 0.75 is alone in (0.5, 0.75] -> 0.5 * 0.75 + 0.5 * 0.1 (left-closed would pool them: 0.325)
    torch.testing.assert_close(cal.expected_calibration_error(probs, targets, n_bins=4),
                               torch.tensor(0.425, dtype=torch.float64))
    count, _, _ = cal.reliability_bins(*_two_class([1.0, 0.5], [1, 1]), n_bins=2)
    assert count.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_targets_of_any_integer_dtype(dtype):
    probs = torch.softmax(3 * torch.randn(200, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64), 1)
    targets = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(cal.expected_calibration_error(probs, targets.to(dtype), n_bins=10),
                               _loop_ece(probs, targets, 10))


@pytest.mark.parametrize("n_bins", [1, 2, 10, 15, 100])
@pytest.mark.parametrize("scale", [0.5, 3.0, 30.0])
def test_matches_the_bin_by_bin_definition(n_bins, scale):
    g = torch.Generator().manual_seed(n_bins)
    probs = torch.softmax(scale * torch.randn(400, 5, generator=g, dtype=torch.float64), 1)
    targets = torch.randint(0, 5, (400,), generator=g)
    torch.testing.assert_close(cal.expected_calibration_error(probs, targets, n_bins), _loop_ece(probs, targets, n_bins))


def test_reliability_bins_are_nan_when_empty_and_counts_sum_to_n():
    probs, targets = _two_class([0.9, 0.95, 0.6], [1, 0, 1])
    count, acc, conf = cal.reliability_bins(probs, targets, n_bins=10)
    assert count.sum().item() == 3 and torch.isnan(acc[0]) and torch.isnan(conf[0])
    # 0.9 lies on the edge of (0.8, 0.9], 0.95 in (0.9, 1], 0.6 on the edge of (0.5, 0.6]
    assert count[8].item() == 1 and count[9].item() == 1 and count[5].item() == 1
    assert acc[8].item() == 1.0 and acc[9].item() == 0.0


def test_perfectly_calibrated_bins_give_zero_and_low_precision_is_upcast():
    probs, targets = _two_class([0.75, 0.75, 0.75, 0.75], [1, 1, 1, 0])
    assert cal.expected_calibration_error(probs, targets, n_bins=4).item() == 0.0
    got = cal.expected_calibration_error(probs.bfloat16(), targets, n_bins=4)
    assert got.dtype == torch.float32 and got.item() == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: cal.expected_calibration_error(torch.rand(4, 3), torch.zeros(5, dtype=torch.long)),
     r"probs \(N, C\).*\(4, 3\).*\(5,\)"),
    (lambda: cal.expected_calibration_error(torch.rand(4), torch.zeros(4, dtype=torch.long)), r"probs \(N, C\)"),
    (lambda: cal.expected_calibration_error(torch.rand(4, 3), torch.zeros(4)), "integer tensor of class indices"),
    (lambda: cal.expected_calibration_error(torch.rand(4, 3), torch.zeros(4, dtype=torch.long), n_bins=0),
     "n_bins must be an int >= 1"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
