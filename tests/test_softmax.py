"""Parity of tinygrad_book.softmax with torch: values and gradients, every option, odd shapes and extreme inputs.

Tolerances (the chapter's bars): float64 within 1e-10 relative, float32 within 1e-5 relative (plus a small absolute
floor for entries near zero). Non-finite entries must match torch's exactly (same positions, same inf/nan).
CUDA cases run only where a GPU is present (marked `cuda`).
"""
import math
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map
from hypothesis import given, settings, strategies as st, HealthCheck

from tinygrad_book import softmax as S

DEVICES = ['cpu'] + ([pytest.param('cuda', marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])
DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: (1e-10, 1e-13), torch.float32: (1e-5, 1e-6)}


def assert_close(ours, ref, dtype=None):
    dtype = dtype or ref.dtype
    rtol, atol = TOL[dtype]
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol, equal_nan=True)


def rand(*shape, dtype=torch.float64, device='cpu', scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)


def assert_close_or_better(ours, ref, truth, atol32=None):
    """float32: within tolerance of torch's float32 result, or, where both round differently, at least about as close
    to the float64 truth as torch is (e.g. gradients that cancel: g - p * sum(g) near 0)."""
    try:
        if atol32 is not None and ref.dtype == torch.float32:
            return torch.testing.assert_close(ours, ref, rtol=TOL[torch.float32][0], atol=atol32, equal_nan=True)
        return assert_close(ours, ref)
    except AssertionError:
        if truth is None: raise
    torch.testing.assert_close(ours.isfinite(), ref.isfinite())
    fin = ref.isfinite() & ours.isfinite()
    e_ours = (ours.double() - truth)[fin].abs()
    e_torch = (ref.double() - truth)[fin].abs()
    bad = e_ours > 2 * e_torch + 1e-5 * truth[fin].abs() + 1e-7
    assert not bad.any(), (f"{int(bad.sum())} entries worse than torch: ours err {e_ours[bad][:5].tolist()}, "
                           f"torch err {e_torch[bad][:5].tolist()}")


def check_pair(ours_fn, ref_fn, x, dtype, *args, atol32=None, **kw):
    """Values and gradients (with a random upstream gradient) of ours vs torch. `atol32` overrides the float32
    absolute tolerance, for formulas whose float32 rounding depends on the order of operations."""
    xo = x.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    yo, yr = ours_fn(xo, *args, **kw), ref_fn(xr, *args, **kw)
    g = torch.randn(yr.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(yr)
    go, = torch.autograd.grad(yo, xo, g, allow_unused=False)
    gr, = torch.autograd.grad(yr, xr, g)
    yt = gt = None
    if dtype == torch.float32:  # the float64 truth, for entries where the two float32 results round differently
        xt = x.detach().double().requires_grad_()
        yt = _call64(ref_fn, xt, *args, **kw)
        gt, = torch.autograd.grad(yt, xt, g.double())
    assert_close_or_better(yo.detach(), yr.detach(), None if yt is None else yt.detach(), atol32)
    assert_close_or_better(go, gr, gt, atol32)


class _Promote64(TorchFunctionMode):
    "Run torch functions with every float32 tensor argument promoted to float64 (targets, weights captured by lambdas)."
    def __torch_function__(self, func, types, args=(), kwargs=None):
        up = lambda a: a.double() if isinstance(a, torch.Tensor) and a.dtype == torch.float32 else a
        return func(*tree_map(up, args), **tree_map(up, kwargs or {}))


def _call64(fn, x, *args, **kw):
    "Call a torch reference in float64."
    with _Promote64():
        return fn(x, *args, **kw)


SHAPES = [(7, 1), (1, 1), (3, 50304), (5, 13), (2, 3, 4), (4, 2049), (3, 4096), (2, 32768), (2, 1000)]  # the last three: CUDA's register path


# ---------------------------------------------------------------- softmax / log_softmax / logsumexp
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_row_ops_match_torch(name, shape, dtype, device):
    x = rand(*shape, dtype=dtype, device=device)
    check_pair(getattr(S, name), getattr(torch, name), x, dtype, dim=-1)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('dim', [0, 1, -2, 2])
@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_dim_not_last_and_noncontiguous(name, dim, dtype, device):
    x = rand(6, 5, 7, dtype=dtype, device=device)
    check_pair(getattr(S, name), getattr(torch, name), x, dtype, dim=dim)
    xt = rand(7, 5, 6, dtype=dtype, device=device).transpose(0, 2)  # non-contiguous
    assert not xt.is_contiguous()
    check_pair(getattr(S, name), getattr(torch, name), xt, dtype, dim=dim)
    xs = rand(6, 10, 7, dtype=dtype, device=device)[:, ::2]  # strided slice
    check_pair(getattr(S, name), getattr(torch, name), xs, dtype, dim=dim)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_extreme_logits(name, dtype, device):
    x = rand(6, 300, dtype=dtype, device=device)
    x[0] = x[0].sign() * 1e4  # +-1e4
    x[1, ::3] = -math.inf  # masked positions
    x[2, :] = -math.inf
    x[2, 5] = 1.0  # one finite entry
    x[3] *= 1e3
    x[4, 0] = 1e4
    x[4, 1:] = -1e4
    fo, fr = getattr(S, name), getattr(torch, name)
    yo, yr = fo(x, -1), fr(x, -1)
    assert_close(yo, yr, dtype)
    assert not torch.isnan(yo).any(), "NaN where torch has none"
    # gradients on the rows torch differentiates without NaN
    check_pair(fo, fr, x, dtype, dim=-1)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_all_masked_row_matches_torch_nan(name, dtype):
    """An all -inf row: torch gives nan for softmax/log_softmax and -inf for logsumexp; so must we."""
    x = torch.full((2, 4), -math.inf, dtype=dtype)
    x[1] = torch.arange(4.0, dtype=dtype)
    assert_close(getattr(S, name)(x), getattr(torch, name)(x, -1), dtype)


@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_scalar_and_empty(name):
    fo, fr = getattr(S, name), getattr(torch, name)
    for x in (torch.tensor(2.5, dtype=torch.float64), torch.zeros(0, 5, dtype=torch.float64),
              torch.zeros(3, 0, dtype=torch.float64)):
        assert_close(fo(x, -1), fr(x, -1), torch.float64)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_fallback_dtypes(name, dtype):
    x = rand(4, 33, dtype=torch.float32).to(dtype)
    yo, yr = getattr(S, name)(x, -1), getattr(torch, name)(x, -1)
    assert yo.dtype == yr.dtype
    torch.testing.assert_close(yo.float(), yr.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_gradcheck(name):
    f = getattr(S, name)
    for dim in (-1, 0):
        x = rand(3, 5, dtype=torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: f(t, dim), (x,))
        assert torch.autograd.gradgradcheck(lambda t: f(t, dim), (x,))


def node_names(y):
    "Names of the autograd nodes behind y (Python Functions by class name, C++ ones by their node name)."
    names, stack = set(), [y.grad_fn]
    while stack:  # iterative walk of the autograd graph
        n = stack.pop()
        if n is None: continue
        names.add(type(n).__name__ if type(n).__name__ != 'CppFunction' else n.name())
        stack.extend(f for f, _ in n.next_functions)
    return names


def test_kernels_are_used_for_float():
    """The CPU fast path really goes through the compiled op (not silently through the torch fallback): in eager mode
    the graph nodes built in C++ (softmax, cross_entropy) or the autograd.Function (logsumexp)."""
    x = rand(4, 9, dtype=torch.float32).requires_grad_()
    assert S._use_kernel(x)
    assert any('SoftmaxEager' in n for n in node_names(S.softmax(x))), node_names(S.softmax(x))
    assert any('SoftmaxEager' in n for n in node_names(S.log_softmax(x, 0))), node_names(S.log_softmax(x, 0))
    assert any(n.startswith('_LogSumExpFn') for n in node_names(S.logsumexp(x, 0)))
    loss = S.cross_entropy(x, torch.tensor([1, 2, 3, 4]))
    assert any('CrossEntropyEager' in n for n in node_names(loss)), node_names(loss)


def test_functions_are_used_under_transforms_and_forward_ad():
    """Under torch.func and forward-mode AD the autograd.Function classes run (they carry the vmap and jvp rules);
    the C++ nodes serve plain eager mode only. Both give torch's gradients (the other tests)."""
    import torch.autograd.forward_ad as fwAD
    x = rand(4, 9, dtype=torch.float64)
    seen = []
    def f(z):
        y = S.softmax(z, -1)
        seen.append(type(y.grad_fn).__name__ if y.grad_fn is not None else None)
        return y.sum()
    torch.func.grad(f)(x)
    with fwAD.dual_level():
        y = S.cross_entropy(fwAD.make_dual(x, torch.ones_like(x)), torch.tensor([1, 2, 3, 4]))
        assert fwAD.unpack_dual(y).tangent is not None
    assert 'CppFunction' not in seen


# ---------------------------------------------------------------- cross_entropy
def ce_pair(logits, target, dtype, **kw):
    check_pair(lambda x: S.cross_entropy(x, target, **kw), lambda x: F.cross_entropy(x, target, **kw), logits, dtype)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('label_smoothing', [0.0, 0.1, 1.0])
@pytest.mark.parametrize('ignore', [False, True])
def test_cross_entropy_options(ignore, label_smoothing, weighted, reduction, dtype, device):
    N, C = 37, 11
    x = rand(N, C, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, C, (N,), generator=g).to(device)
    if ignore: t[::4] = -100
    w = (torch.rand(C, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device) if weighted else None
    ce_pair(x, t, dtype, weight=w, reduction=reduction, label_smoothing=label_smoothing)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('shape', [(5, 7), (2, 7, 3), (2, 7, 3, 4), (7,), (4, 1), (3, 50304)])
def test_cross_entropy_shapes(shape, dtype, device):
    """Class indices of any batch shape with classes on dim 1; unbatched (C,) logits with a scalar target."""
    x = rand(*shape, dtype=dtype, device=device)
    C = shape[1] if len(shape) > 1 else shape[0]
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = torch.randint(0, C, tshape, generator=torch.Generator().manual_seed(4)).to(device)
    for red in ('mean', 'sum', 'none'):
        ce_pair(x, t, dtype, reduction=red)
        ce_pair(x, t, dtype, reduction=red, ignore_index=0, label_smoothing=0.2)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_cross_entropy_noncontiguous_and_extreme(dtype, device):
    x = rand(30, 40, dtype=dtype, device=device).t()  # (N=40, C=30), non-contiguous
    assert not x.is_contiguous()
    t = torch.randint(0, 30, (40,), generator=torch.Generator().manual_seed(5)).to(device)
    ce_pair(x, t, dtype)
    x = rand(8, 50, dtype=dtype, device=device)
    x[0] = 1e4  # a row of ties
    x[1, :] = -1e4
    x[1, 3] = 1e4
    x[2, ::2] = -math.inf  # masked classes; targets below are never masked
    t = torch.tensor([0, 3, 1, 5, 7, 9, 11, 13], device=device)
    for ls in (0.0, 0.3):
        yo = S.cross_entropy(x, t, label_smoothing=ls, reduction='none')
        yr = F.cross_entropy(x, t, label_smoothing=ls, reduction='none')
        assert_close(yo, yr, dtype)
    ce_pair(x, t, dtype)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_cross_entropy_all_ignored(reduction, device):
    x = rand(6, 4, device=device)
    t = torch.full((6,), -100, device=device)
    yo = S.cross_entropy(x, t, reduction=reduction)
    yr = F.cross_entropy(x, t, reduction=reduction)
    assert_close(yo, yr, torch.float64)  # mean: nan (0/0), as torch
    w = torch.rand(4, dtype=torch.float64, device=device)
    assert_close(S.cross_entropy(x, t, weight=w, reduction=reduction),
                 F.cross_entropy(x, t, weight=w, reduction=reduction), torch.float64)


@pytest.mark.parametrize('device', DEVICES)
def test_cross_entropy_empty_batch(device):
    for x, t in ((torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long)),
                 (torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.float64))):
        for red in ('mean', 'sum', 'none'):
            assert_close(S.cross_entropy(x.to(device), t.to(device), reduction=red),
                         F.cross_entropy(x.to(device), t.to(device), reduction=red), torch.float64)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('shape', [(6, 5), (2, 5, 3), (5,)])
@pytest.mark.parametrize('weighted', [False, True])
def test_cross_entropy_probability_targets(weighted, shape, dtype, device):
    x = rand(*shape, dtype=dtype, device=device)
    cdim = 1 if len(shape) > 1 else 0
    p = torch.softmax(rand(*shape, seed=7), cdim).to(dtype=dtype, device=device)
    C = shape[cdim]
    w = torch.rand(C, dtype=torch.float64).to(dtype=dtype, device=device) if weighted else None
    for red in ('mean', 'sum', 'none'):
        for ls in (0.0, 0.25):
            ce_pair(x, p, dtype, weight=w, reduction=red, label_smoothing=ls)


def test_cross_entropy_gradcheck():
    x = rand(6, 5).requires_grad_()
    t = torch.tensor([0, 4, -100, 2, 2, 1])
    w = torch.rand(5, dtype=torch.float64) + 0.5
    for kw in ({}, dict(weight=w), dict(label_smoothing=0.2), dict(weight=w, label_smoothing=0.3, reduction='sum')):
        f = lambda z: S.cross_entropy(z, t, **kw)
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))
    p = torch.softmax(rand(6, 5, seed=2), 1)
    assert torch.autograd.gradcheck(lambda z: S.cross_entropy(z, p, label_smoothing=0.1), (x,))


# ---------------------------------------------------------------- bad input: a Python exception naming the problem
BAD = [
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 3])), IndexError, 'out of bounds'),
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, -1, 2])), IndexError, 'out of bounds'),
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1], dtype=torch.int32)), TypeError, 'int64'),
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2])), ValueError, 'does not match'),
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.zeros(4, 2)), ValueError, "logits' shape"),
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), weight=torch.ones(4)), ValueError, 'shape (3,)'),
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), reduction='avg'), ValueError, 'reduction'),
    (lambda: S.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), label_smoothing=1.5), ValueError, 'label_smoothing'),
    (lambda: S.cross_entropy(torch.randint(0, 3, (4, 3)), torch.tensor([0, 1, 2, 1])), TypeError, 'floating-point'),
    (lambda: S.cross_entropy(torch.tensor(1.0), torch.tensor(0)), ValueError, 'at least 1 dimension'),
    (lambda: S.cross_entropy([[1.0, 2.0]], torch.tensor([0])), TypeError, 'torch.Tensor'),
    (lambda: S.softmax(torch.randn(3, 4), dim=2), IndexError, 'out of range'),
    (lambda: S.softmax(torch.arange(4), dim=0), TypeError, 'floating-point'),
    (lambda: S.binary_cross_entropy_with_logits(torch.randn(3, 2), torch.rand(3, 3)), ValueError, 'must equal'),
    (lambda: S.binary_cross_entropy_with_logits(torch.randn(3, 2), torch.rand(3, 2), pos_weight=torch.ones(3)), ValueError, 'broadcast'),
]


@pytest.mark.parametrize('fn,exc,msg', BAD)
def test_bad_input_raises_clear_error(fn, exc, msg):
    with pytest.raises(exc, match=None) as ei:
        fn()
    assert msg in str(ei.value), str(ei.value)


def test_raw_op_rejects_bad_index_without_crashing():
    """Even the raw dispatcher op, called directly, checks indices before any kernel runs."""
    ops = S._ops()
    with pytest.raises(IndexError, match='out of bounds'):  # TORCH_CHECK_INDEX: an IndexError, as torch's own kernel
        ops.cross_entropy_fwd(torch.randn(3, 4), torch.tensor([0, 9, 1]), None, -100, 0.0, 0)


# ---------------------------------------------------------------- binary cross-entropy with logits
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_bce_with_logits(reduction, dtype, device):
    x = rand(5, 4, dtype=dtype, scale=30)
    x[0, 0], x[0, 1] = 1e4, -1e4
    y = (torch.rand(5, 4, generator=torch.Generator().manual_seed(0)) > 0.5).to(dtype)
    y[1] = 0.3  # soft labels
    w = torch.rand(5, 1, dtype=dtype)
    pw = torch.rand(4, dtype=dtype) * 3
    x, y, w, pw = (t.to(device) for t in (x, y, w, pw))
    for kw in ({}, dict(weight=w), dict(pos_weight=pw), dict(weight=w, pos_weight=pw)):
        check_pair(lambda z: S.binary_cross_entropy_with_logits(z, y, reduction=reduction, **kw),
                   lambda z: F.binary_cross_entropy_with_logits(z, y, reduction=reduction, **kw), x, dtype, atol32=1e-5)


# ---------------------------------------------------------------- property tests
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # example count: tests/conftest.py profiles
@given(rows=st.integers(1, 6), cols=st.integers(1, 300), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
       seed=st.integers(0, 2**16), dtype=st.sampled_from(DTYPES), ls=st.sampled_from([0.0, 0.05, 0.5]))
def test_property_cross_entropy_and_softmax(rows, cols, scale, seed, dtype, ls):
    x = rand(rows, cols, dtype=dtype, scale=scale, seed=seed)
    t = torch.randint(0, cols, (rows,), generator=torch.Generator().manual_seed(seed))
    ce_pair(x, t, dtype, label_smoothing=ls)
    p = S.softmax(x)
    assert_close(p, torch.softmax(x, -1), dtype)
    torch.testing.assert_close(p.sum(-1), torch.ones(rows, dtype=dtype), rtol=1e-5, atol=1e-5)
    # shift invariance: softmax(x + c) == softmax(x)
    assert_close(S.softmax(x + 100.0), torch.softmax(x + 100.0, -1), dtype)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_bad_index_clear_error_and_raw_op_never_reads_out_of_bounds():
    x = torch.randn(3, 4, device='cuda')
    with pytest.raises(IndexError, match='out of bounds'):
        S.cross_entropy(x, torch.tensor([0, 9, 1], device='cuda'))
    loss, lse, _ = S._ops().cross_entropy_fwd(x, torch.tensor([0, 9, 1], device='cuda'), None, -100, 0.0, 0)
    assert torch.isnan(loss[1]) and not torch.isnan(loss[[0, 2]]).any()
    torch.cuda.synchronize()  # no illegal memory access was raised


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.integers(0, 4), min_size=1, max_size=3), C=st.integers(1, 40), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(DTYPES), weighted=st.booleans(), ls=st.sampled_from([0.0, 0.1, 1.0]),
       reduction=st.sampled_from(['mean', 'sum', 'none']), ignore_frac=st.sampled_from([0.0, 0.3, 1.0]),
       probs=st.booleans())
def test_property_cross_entropy_all_options(batch, C, seed, dtype, weighted, ls, reduction, ignore_frac, probs):
    """Random shapes (N, C, d1, ...), ignored targets, weights, smoothing, reductions, index or probability targets."""
    shape = (batch[0], C, *batch[1:])
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 5).to(dtype)
    w = (torch.rand(C, generator=g, dtype=torch.float64) + 0.05).to(dtype) if weighted else None
    if probs:
        t = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64), 1).to(dtype)
    else:
        t = torch.randint(0, C, (batch[0], *batch[1:]), generator=g)
        t[torch.rand(t.shape, generator=g) < ignore_frac] = -100
    ce_pair(x, t, dtype, weight=w, label_smoothing=ls, reduction=reduction)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('shape', [(7,), (3, 5), (2, 3, 40000), (4, 1)])
def test_bce_with_logits_shapes_and_operands(shape, dtype):
    """Fused kernel: 1-D, N-D, long rows (several parallel spans per row); per-column, per-element, scalar and
    leading-1 operands; and a weight that broadcasts the loss to a larger shape (the torch path)."""
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 10).to(dtype)
    y = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    C = shape[-1]
    operands = [None, torch.rand(C, generator=g, dtype=torch.float64).to(dtype) * 3,
                torch.rand(shape, generator=g, dtype=torch.float64).to(dtype), torch.tensor(2.5, dtype=dtype),
                torch.rand((1,) * (len(shape) - 1) + (C,), generator=g, dtype=torch.float64).to(dtype)]
    for w in operands:
        for pw in operands[:3]:
            for red in ('mean', 'sum', 'none'):
                # atol 1e-5 (torch.testing's float32 default): (1 - y) x - c log(sigmoid(x)) cancels two terms of
                # size |x|, so float32 results differ in the last bits of |x| with the order of operations
                check_pair(lambda z: S.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw, reduction=red),
                           lambda z: F.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw, reduction=red),
                           x, dtype, atol32=1e-5)
    wide = torch.rand((2,) + tuple(shape), generator=g, dtype=torch.float64).to(dtype)  # would broadcast the loss
    with pytest.raises(RuntimeError):
        F.binary_cross_entropy_with_logits(x, y, weight=wide)  # torch refuses it...
    with pytest.raises(ValueError, match='broadcast'):
        S.binary_cross_entropy_with_logits(x, y, weight=wide)  # ...and so do we, with the reason


def test_bce_with_logits_uses_kernel_and_derivatives():
    x = rand(4, 6).requires_grad_()
    y = torch.rand(4, 6, dtype=torch.float64, requires_grad=True)
    pw = torch.rand(6, dtype=torch.float64) + 0.5
    loss = S.binary_cross_entropy_with_logits(x, y, pos_weight=pw)
    assert type(loss.grad_fn).__name__.startswith('_BCEFn'), loss.grad_fn
    f = lambda a, b: S.binary_cross_entropy_with_logits(a, b, pos_weight=pw, reduction='sum')
    assert torch.autograd.gradcheck(f, (x, y))          # d/d logits (kernel) and d/d target
    assert torch.autograd.gradgradcheck(f, (x, y))
    gy, = torch.autograd.grad(S.binary_cross_entropy_with_logits(x, y, pos_weight=pw), y)
    gy_ref, = torch.autograd.grad(F.binary_cross_entropy_with_logits(x, y, pos_weight=pw), y)
    assert_close(gy, gy_ref)



@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'logsumexp'])
def test_masked_prefix_wider_than_a_chunk(name, dtype, device):
    """Rows whose first thousands of entries are -inf (causal masks over long rows): the CPU kernel sums in chunks
    of 2048, and a chunk seen while the running max is still -inf must add 0, not exp(-inf + inf) = NaN."""
    x = rand(6, 5000, dtype=dtype, device=device)
    x[0, :2048] = -math.inf
    x[1, :4097] = -math.inf
    x[2, :-1] = -math.inf  # only the last entry is finite
    x[3, :3000] = -math.inf
    x[3, 4000] = math.nan  # a NaN after a masked prefix poisons the row, as in torch
    x[4, :] = -math.inf  # nothing finite: NaN (softmax) / -inf (logsumexp), as in torch
    fo, fr = getattr(S, name), getattr(torch, name)
    assert_close(fo(x, -1), fr(x, -1), dtype)
    check_pair(fo, fr, x[[0, 1, 2, 5]], dtype, dim=-1)
    t = torch.tensor([3000, 4500, 4999, 10], device=device)
    ce_pair(x[[0, 1, 2, 5]], t, dtype)
    ce_pair(x[[0, 1, 2, 5]], t, dtype, label_smoothing=0.1, reduction='none')


def test_weights_that_require_grad_are_refused_like_torch():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.rand(4, requires_grad=True)
    with pytest.raises(RuntimeError):
        F.cross_entropy(x, torch.tensor([0, 1, 2]), weight=w)
    with pytest.raises(ValueError, match='not differentiable with respect to weight'):
        S.cross_entropy(x, torch.tensor([0, 1, 2]), weight=w)
    y = torch.rand(3, 4)
    for kw in (dict(weight=w), dict(pos_weight=w)):
        with pytest.raises(RuntimeError):
            F.binary_cross_entropy_with_logits(x, y, **kw)
        with pytest.raises(ValueError, match='not differentiable'):
            S.binary_cross_entropy_with_logits(x, y, **kw)
    with torch.no_grad():  # no graph, no question: allowed, as in torch
        assert_close(S.cross_entropy(x, torch.tensor([0, 1, 2]), weight=w), F.cross_entropy(x, torch.tensor([0, 1, 2]), weight=w))


@pytest.mark.parametrize('name', ['softmax', 'log_softmax'])
def test_result_layout_matches_torch(name):
    x = rand(3, 4, 5, dtype=torch.float32)
    for d in (0, 1, 2):
        assert getattr(S, name)(x, d).is_contiguous() == getattr(torch, name)(x, d).is_contiguous()
