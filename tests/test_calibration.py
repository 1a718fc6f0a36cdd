"""Oracle tests for the calibration tools of chapter 04 (softmax): TemperatureScaler, ece, reliability_diagram.

Every expected value is derived independently of the code under test: known generative
temperatures, a brute-force ECE written with plain Python loops, or closed-form edge cases.
"""
import math
import random

import matplotlib
matplotlib.use("Agg")  # headless: must precede any pyplot import

import pytest
import torch

from tinygrad_book.softmax import TemperatureScaler, ece, reliability_diagram


# ---------------------------------------------------------------- helpers (independent references)

def _nll(z, y):
    "Mean negative log-likelihood of labels y under softmax(z), float64, via torch's reference op."
    return torch.nn.functional.cross_entropy(z.double(), y).item()


def _sample_problem(n=20000, c=10, seed=0):
    "True logits z (n, c) and labels drawn from softmax(z): a perfectly calibrated model at T=1."
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, dim=-1), 1, generator=g).squeeze(1)
    return z, y


def _brute_force_bins(probs, labels, n_bins):
    "Per-bin (count, accuracy, mean confidence) with Python loops; bin m is (m/M, (m+1)/M]."
    rows, labels = probs.tolist(), labels.tolist()
    conf = [max(r) for r in rows]
    pred = [r.index(max(r)) for r in rows]  # first maximum, like argmax
    out = []
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        members = [i for i in range(len(rows)) if lo < conf[i] <= hi]
        if members:
            acc = sum(pred[i] == labels[i] for i in members) / len(members)
            cf = sum(conf[i] for i in members) / len(members)
        else:
            acc = cf = 0.0
        out.append((len(members), acc, cf))
    return out


def _brute_force_ece(probs, labels, n_bins):
    n = probs.shape[0]
    return sum(cnt / n * abs(acc - cf) for cnt, acc, cf in _brute_force_bins(probs, labels, n_bins))


def _random_probs(n, c, seed, sharpness):
    "Random probability rows (float64) with a controllable spread of confidences."
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharpness * torch.randn(n, c, generator=g, dtype=torch.float64), dim=-1), \
        torch.randint(0, c, (n,), generator=g)


# ---------------------------------------------------------------- TemperatureScaler

@pytest.mark.parametrize("true_t", [3.0, 0.5])
def test_temperature_recovers_known_temperature(true_t):
    z, y = _sample_problem()
    # the model reports z * true_t, so dividing by T = true_t restores the calibrated logits
    scaler = TemperatureScaler().fit(z * true_t, y)
    assert scaler.temperature == pytest.approx(true_t, rel=0.05)


def test_fit_accepts_float32_and_returns_self():
    z, y = _sample_problem(n=5000, seed=1)
    scaler = TemperatureScaler()
    assert scaler.fit((z * 2).float(), y) is scaler
    assert isinstance(scaler.temperature, float)
    assert scaler.temperature == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("init_t", [1e-3, 1e3])
def test_temperature_positive_and_converges_from_bad_start(init_t):
    z, y = _sample_problem(seed=2)
    scaler = TemperatureScaler(init_temperature=init_t).fit(z * 3, y)
    assert scaler.temperature > 0
    assert scaler.log_t.exp().item() > 0
    assert scaler.temperature == pytest.approx(3.0, rel=0.05)


def test_temperature_positive_even_with_extreme_log_t():
    z, y = _sample_problem(n=5000, seed=3)
    scaler = TemperatureScaler()
    with torch.no_grad():
        scaler.log_t.fill_(-20.0)  # T ~ 2e-9: logits / T overflow-scale, but T itself is exp(.) > 0
    scaler.fit(z, y)
    assert math.isfinite(scaler.temperature) and scaler.temperature > 0


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_fit_does_not_increase_nll(scale):
    z, y = _sample_problem(n=5000, seed=4)
    z = z * scale
    scaler = TemperatureScaler().fit(z, y)
    with torch.no_grad():
        after = _nll(scaler(z), y)
    assert after <= _nll(z, y) + 1e-9
    # and it is a minimum along T: nudging the fitted temperature either way does not help
    t = scaler.temperature
    assert after <= _nll(z / (t * 1.05), y) + 1e-9
    assert after <= _nll(z / (t / 1.05), y) + 1e-9


def test_forward_preserves_argmax_and_divides_by_t():
    z, y = _sample_problem(n=2000, seed=5)
    scaler = TemperatureScaler().fit(z * 2.5, y)
    with torch.no_grad():
        out = scaler(z)
    assert torch.equal(out.argmax(-1), z.argmax(-1))
    torch.testing.assert_close(out, z / scaler.temperature)


# ---------------------------------------------------------------- ece

@pytest.mark.parametrize("n_bins", [1, 5, 15, 37])
@pytest.mark.parametrize("sharpness", [0.5, 3.0, 10.0])
def test_ece_matches_brute_force(n_bins, sharpness):
    probs, y = _random_probs(500, 7, seed=n_bins, sharpness=sharpness)
    assert ece(probs, y, n_bins=n_bins) == pytest.approx(_brute_force_ece(probs, y, n_bins), abs=1e-12)


def test_ece_matches_brute_force_on_a_mostly_correct_model():
    # labels drawn from the probabilities themselves, so accuracy tracks confidence (small ECE)
    probs, _ = _random_probs(2000, 5, seed=11, sharpness=3.0)
    y = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(12)).squeeze(1)
    expected = _brute_force_ece(probs, y, 15)
    assert ece(probs, y) == pytest.approx(expected, abs=1e-12)
    assert expected < 0.05  # sanity of the oracle: sampled-from-itself is nearly calibrated


def test_ece_confident_and_correct_is_zero():
    c = 6
    y = torch.arange(30) % c
    probs = torch.nn.functional.one_hot(y, c).double()
    assert ece(probs, y) == 0.0


def test_ece_confident_and_wrong_is_one():
    c = 6
    y = torch.arange(30) % c
    probs = torch.nn.functional.one_hot((y + 1) % c, c).double()
    assert ece(probs, y) == 1.0


def test_ece_logits_equal_probs_after_softmax():
    g = torch.Generator().manual_seed(7)
    z = 3 * torch.randn(400, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (400,), generator=g)
    probs = torch.softmax(z, dim=-1)
    assert ece(z, y) == pytest.approx(ece(probs, y), abs=1e-9)
    assert ece(z, y) == pytest.approx(_brute_force_ece(probs, y, 15), abs=1e-9)


def test_ece_invariant_to_sample_permutation():
    probs, y = _random_probs(300, 4, seed=8, sharpness=2.0)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(9))
    assert ece(probs[perm], y[perm]) == pytest.approx(ece(probs, y), abs=1e-12)


def test_ece_returns_float_in_unit_interval():
    probs, y = _random_probs(100, 3, seed=10, sharpness=1.0)
    e = ece(probs, y)
    assert isinstance(e, float) and 0.0 <= e <= 1.0


# ---------------------------------------------------------------- input validation

_Z = torch.randn(8, 4)
_Y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])

_BAD = [
    ("1-D logits", lambda f: f(torch.randn(8), _Y), "2-D"),
    ("3-D logits", lambda f: f(torch.randn(8, 4, 2), _Y), "2-D"),
    ("integer logits", lambda f: f(torch.ones(8, 4, dtype=torch.int64), _Y), "floating"),
    ("empty logits", lambda f: f(torch.randn(0, 4), torch.zeros(0, dtype=torch.int64)), "non-empty"),
    ("labels wrong length", lambda f: f(_Z, _Y[:5]), "length"),
    ("2-D labels", lambda f: f(_Z, _Y[:, None]), "1-D"),
    ("float labels", lambda f: f(_Z, _Y.float()), "integer"),
    ("label too large", lambda f: f(_Z, torch.tensor([0, 1, 2, 4, 0, 1, 2, 3])), "[0, 4)"),
    ("negative label", lambda f: f(_Z, torch.tensor([0, 1, 2, -1, 0, 1, 2, 3])), "[0, 4)"),
]
_FUNCS = {
    "ece": lambda z, y: ece(z, y),
    "fit": lambda z, y: TemperatureScaler().fit(z, y),
    "reliability_diagram": lambda z, y: reliability_diagram(z, y),
}


@pytest.mark.parametrize("fname", list(_FUNCS))
@pytest.mark.parametrize("case,call,msg", _BAD, ids=[b[0] for b in _BAD])
def test_bad_inputs_raise_with_message(fname, case, call, msg):
    with pytest.raises((ValueError, TypeError), match=msg.replace("[", r"\[").replace(")", r"\)")):
        call(_FUNCS[fname])


@pytest.mark.parametrize("n_bins", [0, -3, 2.5])
def test_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        ece(_Z, _Y, n_bins=n_bins)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_diagram(_Z, _Y, n_bins=n_bins)


def test_bad_init_temperature():
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="init_temperature"):
            TemperatureScaler(init_temperature=bad)


# ---------------------------------------------------------------- reliability_diagram

@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_reliability_diagram_bars_match_per_bin_accuracy(n_bins):
    import matplotlib.pyplot as plt
    probs, y = _random_probs(400, 5, seed=13, sharpness=2.5)
    ax = reliability_diagram(probs, y, n_bins=n_bins, title="t")
    try:
        assert isinstance(ax, matplotlib.axes.Axes)
        acc_bars = [c for c in ax.containers if c.get_label() == "Accuracy"]
        assert len(acc_bars) == 1 and len(acc_bars[0]) == n_bins
        expected = [acc for _, acc, _ in _brute_force_bins(probs, y, n_bins)]
        heights = [p.get_height() for p in acc_bars[0]]
        assert heights == pytest.approx(expected, abs=1e-9)
    finally:
        plt.close(ax.figure)


def test_reliability_diagram_draws_on_given_axes():
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2)
    try:
        probs, y = _random_probs(50, 3, seed=14, sharpness=1.0)
        assert reliability_diagram(probs, y, n_bins=5, ax=axs[1]) is axs[1]
        assert len(axs[0].patches) == 0  # nothing drawn on the other axes
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- docstring claims (issue 6)

def test_docstring_examples_hold():
    "The examples in TemperatureScaler's __init__ and forward docstrings."
    assert round(TemperatureScaler(2.0).temperature, 6) == 2.0
    out = TemperatureScaler(2.0)(torch.tensor([[2.0, -4.0]]))
    assert torch.allclose(out, torch.tensor([[1.0, -2.0]]), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_forward_keeps_dtype_and_any_leading_shape(dtype):
    z = torch.randn(2, 3, 5).to(dtype)
    out = TemperatureScaler(3.0)(z)
    assert out.dtype == dtype and out.shape == z.shape
    assert torch.equal(out.argmax(-1), z.argmax(-1))


def test_fit_on_log_probabilities_equals_fit_on_logits():
    "log_softmax(z) = z - logsumexp(z) row by row: a per-row constant that softmax ignores, so the optimal T is the same."
    z, y = _sample_problem(n=5000, seed=3)
    t_logits = TemperatureScaler().fit(z * 2, y).temperature
    t_logp = TemperatureScaler().fit(torch.log_softmax(z * 2, -1), y).temperature
    assert t_logp == pytest.approx(t_logits, rel=1e-5)


def test_reliability_diagram_gap_spans_accuracy_to_confidence():
    "The gap is an unfilled hatched outline from each non-empty bin's accuracy to its mean confidence (brute force)."
    import matplotlib.pyplot as plt
    probs, y = _random_probs(400, 5, seed=15, sharpness=2.5)
    n_bins = 10
    ax = reliability_diagram(probs, y, n_bins=n_bins)
    try:
        gap = [c for c in ax.containers if c.get_label() == "Gap to mean confidence"]
        assert len(gap) == 1
        expected = [(acc, cf) for cnt, acc, cf in _brute_force_bins(probs, y, n_bins) if cnt]
        assert len(gap[0]) == len(expected)
        for patch, (acc, cf) in zip(gap[0], expected):
            lo, hi = sorted((patch.get_y(), patch.get_y() + patch.get_height()))
            assert (lo, hi) == pytest.approx(tuple(sorted((acc, cf))), abs=1e-9)
            assert patch.get_facecolor()[3] == 0 and patch.get_hatch()  # an outline: no fill colour of its own
        labels = ax.get_legend_handles_labels()[1]
        assert "Gap to mean confidence" in labels and "Accuracy" in labels
    finally:
        plt.close(ax.figure)
