"""tinygrad_book.softmax as a drop-in for torch.nn.functional: torch.func transforms, torch.compile(fullgraph=True),
meta tensors, autocast, torch's signatures and dtype rules, and torch's error types.

Oracle: the same call on torch's own functions. Tolerances: float64 1e-10 relative (1e-12 absolute), as the parity
suite (tests/test_softmax.py): the transforms change how the kernels are called, never the arithmetic.
torch.compile is slow on 2 cores (tens of seconds per function with Inductor): one Inductor test compiles one
function that calls every op, forward and backward; the others use the `aot_eager` backend, which runs the same
Dynamo trace (fullgraph), fake kernels and AOTAutograd joint graph without generating code.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, jacfwd, jacrev, jvp, vmap

from tinygrad_book import softmax as S

RTOL, ATOL = 1e-10, 1e-12


def close(a, b, rtol=RTOL, atol=ATOL):
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


def rand(*shape, seed=0, dtype=torch.float64, scale=3.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale).to(dtype)


X = rand(3, 5)
T = torch.tensor([1, 4, 0])
T_IGN = torch.tensor([1, -100, 0])
W = torch.rand(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
Y = torch.rand(3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
PW = torch.rand(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3

# every public function (and the options that change its kernel path), ours vs torch's, as functions of the logits
PAIRS = {
    'softmax': (lambda z: S.softmax(z, -1), lambda z: torch.softmax(z, -1)),
    'softmax_dim0': (lambda z: S.softmax(z, 0), lambda z: torch.softmax(z, 0)),
    'log_softmax': (lambda z: S.log_softmax(z, 1), lambda z: torch.log_softmax(z, 1)),
    'logsumexp': (lambda z: S.logsumexp(z, 1), lambda z: torch.logsumexp(z, 1)),
    'logsumexp_tuple': (lambda z: S.logsumexp(z, (0, 1), keepdim=True), lambda z: torch.logsumexp(z, (0, 1), keepdim=True)),
    'ce_mean': (lambda z: S.cross_entropy(z, T), lambda z: F.cross_entropy(z, T)),
    'ce_weighted_smoothed': (lambda z: S.cross_entropy(z, T_IGN, weight=W, label_smoothing=0.2),
                             lambda z: F.cross_entropy(z, T_IGN, weight=W, label_smoothing=0.2)),
    'ce_sum': (lambda z: S.cross_entropy(z, T, reduction='sum'), lambda z: F.cross_entropy(z, T, reduction='sum')),
    'ce_none': (lambda z: S.cross_entropy(z, T_IGN, reduction='none'), lambda z: F.cross_entropy(z, T_IGN, reduction='none')),
    'ce_probs': (lambda z: S.cross_entropy(z, Y.softmax(1)), lambda z: F.cross_entropy(z, Y.softmax(1))),
    'bce': (lambda z: S.binary_cross_entropy_with_logits(z, Y), lambda z: F.binary_cross_entropy_with_logits(z, Y)),
    'bce_pos_weight_sum': (lambda z: S.binary_cross_entropy_with_logits(z, Y, weight=W, pos_weight=PW, reduction='sum'),
                           lambda z: F.binary_cross_entropy_with_logits(z, Y, weight=W, pos_weight=PW, reduction='sum')),
    'bce_none': (lambda z: S.binary_cross_entropy_with_logits(z, Y, reduction='none'),
                 lambda z: F.binary_cross_entropy_with_logits(z, Y, reduction='none')),
}
NAMES = list(PAIRS)


def scalar(f):
    return lambda z: f(z).sum()


# ---------------------------------------------------------------- torch.func
@pytest.mark.parametrize('name', NAMES)
def test_func_grad_and_grad_of_grad(name):
    ours, ref = PAIRS[name]
    close(grad(scalar(ours))(X), grad(scalar(ref))(X))
    hv = lambda f: grad(lambda z: (grad(scalar(f))(z) ** 2).sum())(X)   # a second derivative through our backward
    close(hv(ours), hv(ref))


@pytest.mark.parametrize('name', NAMES)
def test_func_vmap(name):
    ours, ref = PAIRS[name]
    xb = torch.stack([X, 2 * X, -X])                                    # (B, 3, 5)
    close(vmap(ours)(xb), vmap(ref)(xb))
    close(vmap(ours, in_dims=1, out_dims=0)(xb.transpose(0, 1)), vmap(ref, in_dims=1, out_dims=0)(xb.transpose(0, 1)))
    close(vmap(grad(scalar(ours)))(xb), vmap(grad(scalar(ref)))(xb))   # per-sample gradients


@pytest.mark.parametrize('name', NAMES)
def test_func_jacrev_jacfwd_jvp(name):
    ours, ref = PAIRS[name]
    close(jacrev(ours)(X), jacrev(ref)(X))
    close(jacfwd(ours)(X), jacfwd(ref)(X))
    tangent = rand(3, 5, seed=9)
    (yo, to), (yr, tr) = jvp(ours, (X,), (tangent,)), jvp(ref, (X,), (tangent,))
    close(yo, yr)
    close(to, tr)


def test_func_vmap_batched_targets_and_bce_operands():
    xb, tb = torch.stack([X, -X]), torch.stack([T, T_IGN])
    for red in ('mean', 'sum', 'none'):
        f = lambda z, t: S.cross_entropy(z, t, weight=W, reduction=red)
        g = lambda z, t: F.cross_entropy(z, t, weight=W, reduction=red)
        close(vmap(f)(xb, tb), vmap(g)(xb, tb))
        close(vmap(f, in_dims=(None, 0))(X, tb), vmap(g, in_dims=(None, 0))(X, tb))
    yb, pwb = torch.stack([Y, 1 - Y]), torch.stack([PW, 2 * PW])
    for red in ('mean', 'none'):
        f = lambda z, y, pw: S.binary_cross_entropy_with_logits(z, y, pos_weight=pw, weight=W, reduction=red)
        g = lambda z, y, pw: F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, weight=W, reduction=red)
        close(vmap(f)(xb, yb, pwb), vmap(g)(xb, yb, pwb))
        close(vmap(f, in_dims=(0, None, None))(xb, Y, PW), vmap(g, in_dims=(0, None, None))(xb, Y, PW))


def test_forward_mode_ad_outside_torch_func():
    import torch.autograd.forward_ad as fwAD
    tangent = rand(3, 5, seed=4)
    for name in ('softmax', 'logsumexp', 'ce_mean', 'bce'):
        ours, ref = PAIRS[name]
        with fwAD.dual_level():
            to = fwAD.unpack_dual(ours(fwAD.make_dual(X, tangent))).tangent
            tr = fwAD.unpack_dual(ref(fwAD.make_dual(X, tangent))).tangent
        close(to, tr)


# ---------------------------------------------------------------- torch.compile(fullgraph=True)
def _every_op(z, t, y):
    return (S.cross_entropy(z, t, label_smoothing=0.1) + S.softmax(z, 0).sum() + S.log_softmax(z, -1).mean()
            + S.logsumexp(z, (0, 1)) + S.binary_cross_entropy_with_logits(z, y, pos_weight=PW.float()))


def _every_op_torch(z, t, y):
    return (F.cross_entropy(z, t, label_smoothing=0.1) + torch.softmax(z, 0).sum() + torch.log_softmax(z, -1).mean()
            + torch.logsumexp(z, (0, 1)) + F.binary_cross_entropy_with_logits(z, y, pos_weight=PW.float()))


def test_compile_fullgraph_inductor_forward_and_backward():
    """The default backend, once: every op in one graph (fullgraph=True: any graph break is an error)."""
    torch._dynamo.reset()
    x, t, y = X.float(), T, Y.float()
    zc, zr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = torch.compile(_every_op, fullgraph=True, dynamic=False)(zc, t, y)
    ref = _every_op_torch(zr, t, y)
    out.backward(); ref.backward()
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=1e-6)       # float32: the kernels' own bar
    torch.testing.assert_close(zc.grad, zr.grad, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['softmax_dim0', 'logsumexp_tuple', 'ce_weighted_smoothed', 'ce_none', 'bce_pos_weight_sum'])
def test_compile_fullgraph_aot_eager(name):
    ours, ref = PAIRS[name]
    zc, zr = X.clone().requires_grad_(), X.clone().requires_grad_()
    out = torch.compile(ours, fullgraph=True, dynamic=False, backend='aot_eager')(zc)
    expected = ref(zr)
    close(out, expected)
    g = rand(*expected.shape, seed=5) if expected.dim() else torch.tensor(1.0, dtype=torch.float64)
    out.backward(g); expected.backward(g)
    close(zc.grad, zr.grad)


def test_compile_fullgraph_bad_target_still_raises_index_error():
    f = torch.compile(lambda z, t: S.cross_entropy(z, t), fullgraph=True, dynamic=False, backend='aot_eager')
    with pytest.raises(IndexError, match='out of bounds'):
        f(X, torch.tensor([1, 7, 0]))


# ---------------------------------------------------------------- meta tensors
@pytest.mark.parametrize('name', NAMES)
def test_meta_tensors_give_torch_shapes_and_dtypes(name):
    ours, ref = PAIRS[name]
    captured = {k: v for k, v in globals().items() if k in ('T', 'T_IGN', 'W', 'Y', 'PW')}
    try:  # the functions close over T, W, Y...: move them to meta too
        globals().update({k: v.to('meta') for k, v in captured.items()})
        xm = X.to('meta')
        yo, yr = ours(xm), ref(xm)
    finally:
        globals().update(captured)
    assert yo.device.type == 'meta' and yo.shape == yr.shape and yo.dtype == yr.dtype, (yo, yr)


def test_meta_tensors_with_autograd_and_the_fake_kernels():
    xm = torch.empty(8, 1000, device='meta', requires_grad=True)
    loss = S.cross_entropy(xm, torch.empty(8, dtype=torch.long, device='meta'))
    loss.backward()                                          # runs the backward op's fake kernel
    assert xm.grad.shape == (8, 1000) and xm.grad.device.type == 'meta'
    assert S._OPS.softmax_fwd(torch.empty(4, 3, device='meta'), False).shape == (4, 3)


# ---------------------------------------------------------------- autocast
@pytest.mark.parametrize('half', [torch.bfloat16, torch.float16])
def test_cpu_autocast_output_dtype_follows_torch(half):
    x16, x32 = rand(4, 6, dtype=half), rand(4, 6, dtype=torch.float32)
    t, y = torch.tensor([0, 5, 2, 1]), torch.rand(4, 6)
    calls = [(lambda m, x: m.softmax(x, -1), lambda x: torch.softmax(x, -1)),
             (lambda m, x: m.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1)),
             (lambda m, x: m.logsumexp(x, -1), lambda x: torch.logsumexp(x, -1)),
             (lambda m, x: m.cross_entropy(x, t), lambda x: F.cross_entropy(x, t)),
             (lambda m, x: m.cross_entropy(x, t, reduction='none'), lambda x: F.cross_entropy(x, t, reduction='none')),
             (lambda m, x: m.binary_cross_entropy_with_logits(x, y), lambda x: F.binary_cross_entropy_with_logits(x, y)),
             (lambda m, x: m.binary_cross_entropy_with_logits(x, y.to(half)),
              lambda x: F.binary_cross_entropy_with_logits(x, y.to(half)))]
    with torch.autocast('cpu', dtype=half):
        for ours, ref in calls:
            for x in (x16, x32):
                yo, yr = ours(S, x), ref(x)
                assert yo.dtype == yr.dtype, (yo.dtype, yr.dtype)
                torch.testing.assert_close(yo, yr, rtol=2e-2, atol=2e-2)   # 16-bit inputs: torch rounds differently


def test_cuda_autocast_policy_table_matches_torch_docs():
    """No GPU here: the CUDA policy is the documented float32 list (softmax, log_softmax, logsumexp, the losses)."""
    assert S._AUTOCAST_FP32['cuda'] >= {'softmax', 'log_softmax', 'logsumexp', 'cross_entropy', 'bce'}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_autocast_output_dtype_follows_torch():
    x = rand(4, 6, dtype=torch.float16).cuda()
    t, y = torch.tensor([0, 5, 2, 1]).cuda(), torch.rand(4, 6).cuda()
    with torch.autocast('cuda', dtype=torch.float16):
        assert S.softmax(x, -1).dtype == torch.softmax(x, -1).dtype
        assert S.log_softmax(x, -1).dtype == torch.log_softmax(x, -1).dtype
        assert S.logsumexp(x, -1).dtype == torch.logsumexp(x, -1).dtype
        assert S.cross_entropy(x, t).dtype == F.cross_entropy(x, t).dtype
        assert S.binary_cross_entropy_with_logits(x, y).dtype == F.binary_cross_entropy_with_logits(x, y).dtype


# ---------------------------------------------------------------- signatures and dtype rules
def test_softmax_dtype_argument():
    xi = torch.arange(6).reshape(2, 3)
    for fo, fr in ((S.softmax, torch.softmax), (S.log_softmax, torch.log_softmax)):
        close(fo(xi, 1, dtype=torch.float64), fr(xi, 1, dtype=torch.float64))
        close(fo(X.float(), -1, torch.float64), fr(X.float(), -1, torch.float64))          # positional, as torch.softmax
        assert fo(input=X, dim=0).shape == X.shape
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        close(S.softmax(X, dim=None), F.softmax(X, dim=None))                            # F.softmax's implicit dim
    assert any('Implicit dimension' in str(m.message) for m in w)


def test_logsumexp_tuple_dims_and_keepdim():
    x = rand(2, 3, 4, 5)
    for dim in (0, -1, (0, 2), (3, 1), (0, 1, 2, 3), [2]):
        for keepdim in (False, True):
            close(S.logsumexp(x, dim, keepdim), torch.logsumexp(x, dim, keepdim))
            close(S.logsumexp(x, dim=dim, keepdim=keepdim), torch.logsumexp(x, dim=dim, keepdim=keepdim))
    close(S.logsumexp(torch.arange(5), 0), torch.logsumexp(torch.arange(5), 0))          # integers: promoted
    close(S.logsumexp(torch.tensor(2.5, dtype=torch.float64), 0), torch.logsumexp(torch.tensor(2.5, dtype=torch.float64), 0))
    with pytest.raises(RuntimeError):
        torch.logsumexp(x, (1, 1))
    with pytest.raises(RuntimeError, match='more than once'):
        S.logsumexp(x, (1, 1))


def test_keyword_names_and_numpy_dims():
    close(S.cross_entropy(input=X, target=T), F.cross_entropy(input=X, target=T))
    close(S.binary_cross_entropy_with_logits(input=X, target=Y), F.binary_cross_entropy_with_logits(input=X, target=Y))
    for d in (np.int64(1), np.int32(0), torch.tensor(1).item()):
        close(S.softmax(X, d), torch.softmax(X, int(d)))
        close(S.log_softmax(X, dim=d), torch.log_softmax(X, dim=int(d)))
        close(S.logsumexp(X, d), torch.logsumexp(X, int(d)))
    with pytest.raises(TypeError):
        S.softmax(X, 1.0)


def test_uint8_targets_and_legacy_reduction_arguments():
    tu = T.to(torch.uint8)
    close(S.cross_entropy(X, tu), F.cross_entropy(X, tu))
    close(S.cross_entropy(X, tu, reduction='none'), F.cross_entropy(X, tu, reduction='none'))
    with pytest.raises(RuntimeError):
        F.cross_entropy(X, T.int())                                     # torch refuses int32 targets...
    with pytest.raises(TypeError, match='int64'):
        S.cross_entropy(X, T.int())                                     # ...so do we, naming what is accepted
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                                 # both warn that the arguments are deprecated
        close(S.cross_entropy(X, T, size_average=False), F.cross_entropy(X, T, size_average=False))
        close(S.binary_cross_entropy_with_logits(X, Y, reduce=False), F.binary_cross_entropy_with_logits(X, Y, reduce=False))


@pytest.mark.parametrize('a,b', [(torch.float32, torch.float64), (torch.float64, torch.float32),
                                 (torch.float32, torch.float16), (torch.bfloat16, torch.float32)])
def test_dtype_promotion_like_torch(a, b):
    x, p, y = rand(3, 5, dtype=a), torch.softmax(rand(3, 5, seed=1), 1).to(b), Y.to(b)
    tol = dict(rtol=1e-2, atol=1e-2) if torch.float16 in (a, b) or torch.bfloat16 in (a, b) else dict(rtol=1e-5, atol=1e-6)
    for ours, ref in ((S.cross_entropy(x, p), F.cross_entropy(x, p)),
                      (S.binary_cross_entropy_with_logits(x, y), F.binary_cross_entropy_with_logits(x, y)),
                      (S.binary_cross_entropy_with_logits(x, y, reduction='none'),
                       F.binary_cross_entropy_with_logits(x, y, reduction='none'))):
        assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
        torch.testing.assert_close(ours, ref, **tol)


# ---------------------------------------------------------------- odd cases that used to fail
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_zero_dim_bce_with_target_requiring_grad(reduction):
    pairs = []
    for fn in (S.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits):
        x = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        y = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        loss = fn(x, y, pos_weight=torch.tensor(2.0, dtype=torch.float64), reduction=reduction)
        loss.backward()
        pairs.append((loss.detach(), x.grad, y.grad))
    for a, b in zip(*pairs):
        close(a, b)


def test_wrong_types_raise_type_error():
    for kw in (dict(weight=[1.0] * 5), dict(weight=np.ones(5))):
        with pytest.raises(TypeError):
            F.cross_entropy(X, T, **kw)
        with pytest.raises(TypeError, match='weight must be a torch.Tensor'):
            S.cross_entropy(X, T, **kw)
        with pytest.raises(TypeError):
            F.binary_cross_entropy_with_logits(X, Y, **kw)
        with pytest.raises(TypeError, match='weight must be a torch.Tensor'):
            S.binary_cross_entropy_with_logits(X, Y, **kw)
    with pytest.raises(TypeError, match='pos_weight'):
        S.binary_cross_entropy_with_logits(X, Y, pos_weight=[1.0] * 5)
    for fn in (S.softmax, S.log_softmax, S.logsumexp):
        with pytest.raises(TypeError, match='torch.Tensor'):
            fn([1.0, 2.0], 0)
    with pytest.raises(TypeError, match='target'):
        S.cross_entropy(X, [1, 4, 0])


# ---------------------------------------------------------------- calibration: from_logits
def test_ece_from_logits_instead_of_guessing_16bit_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (200,), generator=g)
    probs = torch.softmax(logits, -1)
    truth = S.ece(probs, labels, from_logits=False)
    assert S.ece(logits, labels, from_logits=True) == pytest.approx(truth, abs=1e-12)
    for half in (torch.float16, torch.bfloat16):
        p16 = probs.to(half)                      # rows no longer sum to 1 within 1e-4
        assert S.ece(p16, labels, from_logits=False) == pytest.approx(truth, abs=2e-2)
        assert S.ece(p16, labels) == pytest.approx(S.ece(p16, labels, from_logits=False))   # the guess, per dtype
        assert S.ece(p16, labels, from_logits=True) != pytest.approx(truth, abs=2e-2)      # softmax of probabilities
    with pytest.raises(ValueError, match='outside'):
        S.ece(logits, labels, from_logits=False)
    with pytest.raises(TypeError, match='from_logits'):
        S.ece(logits, labels, from_logits='yes')


def test_reliability_diagram_from_logits():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(100, 4, generator=g) * 2, torch.randint(0, 4, (100,), generator=g)
    ax1 = S.reliability_diagram(logits, labels, from_logits=True)
    ax2 = S.reliability_diagram(torch.softmax(logits, -1).bfloat16(), labels, from_logits=False)
    assert ax1.get_title().startswith('ECE') and ax2.get_title().startswith('ECE')
    plt.close('all')
