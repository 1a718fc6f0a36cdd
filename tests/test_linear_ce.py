"""linear_cross_entropy against the unfused path, F.cross_entropy(F.linear(hidden, weight, bias), target, ...).

Tolerances (the issue's bars): float64 1e-10 relative, float32 2e-5 relative (plus a small absolute floor for entries
near zero: gradient entries are differences of probabilities). The tiles (1024 rows x 4096 classes) are exercised with
V and N larger than one tile, and the C++ kernel is checked against the tiled torch version (the CUDA path).
Peak memory is measured in a subprocess (peak RSS has to start from a fresh process to mean anything).
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, jacfwd, jvp, vmap

from tinygrad_book import softmax as S

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}


def assert_close32(ours, ref, truth):
    """float32: within 2e-5 relative to the tensor's scale (a gradient entry is a sum over rows of terms of either
    sign, and float32 rounds each term, so its error scales with the terms, not with the sum), and no further from
    the float64 truth than the unfused float32 path is, up to a factor of 2."""
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=2e-5 * float(ref.abs().max()))
    assert (ours.double() - truth).norm() <= 2 * (ref.double() - truth).norm() + 1e-7 * truth.norm()


def make(N, d, V, dtype, seed=0, bias=True, ignore=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=torch.float64).to(dtype)
    w = (torch.randn(V, d, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    b = (torch.randn(V, generator=g, dtype=torch.float64)).to(dtype) if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    if ignore: t[::5] = -100
    return h, w, b, t


def unfused(h, w, t, b=None, **kw):
    z = F.linear(h, w, b)                                        # (..., V)
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1), **kw).reshape(
        t.shape if kw.get('reduction') == 'none' else ())


def check(h, w, b, t, dtype, **kw):
    leaves = [x.detach().clone().requires_grad_() for x in (h, w) + ((b,) if b is not None else ())]
    refs = [x.detach().clone().requires_grad_() for x in leaves]
    yo = S.linear_cross_entropy(leaves[0], leaves[1], t, leaves[2] if b is not None else None, **kw)
    yr = unfused(refs[0], refs[1], t, refs[2] if b is not None else None, **kw)
    torch.testing.assert_close(yo, yr, **TOL[dtype])
    up = torch.randn(yr.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(yr)
    go, gr = torch.autograd.grad(yo, leaves, up), torch.autograd.grad(yr, refs, up)
    if dtype == torch.float64:
        for a, r in zip(go, gr): torch.testing.assert_close(a, r, **TOL[dtype])
        return
    truth_leaves = [x.detach().double().requires_grad_() for x in leaves]
    yt = unfused(truth_leaves[0], truth_leaves[1], t, truth_leaves[2] if b is not None else None, **kw)
    for a, r, tr in zip(go, gr, torch.autograd.grad(yt, truth_leaves, up.double())):
        assert_close32(a, r, tr)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('bias,label_smoothing', [(False, 0.0), (True, 0.1)])
def test_parity_with_unfused_across_tiles(bias, label_smoothing, reduction, dtype):
    h, w, b, t = make(1030, 8, 4100, dtype, bias=bias)           # 2 row tiles x 2 vocab tiles, both ragged
    check(h, w, b, t, dtype, reduction=reduction, label_smoothing=label_smoothing)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_batched_hidden_extreme_logits_and_uint8_targets(dtype):
    g = torch.Generator().manual_seed(3)
    h = (torch.randn(2, 5, 16, generator=g, dtype=torch.float64) * 30).to(dtype)   # logits in the hundreds
    w = torch.randn(200, 16, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randint(0, 200, (2, 5), generator=g)
    check(h, w, None, t, dtype)
    check(h, w, None, t, dtype, reduction='none')
    tu = torch.randint(0, 200, (2, 5), generator=g).to(torch.uint8)
    torch.testing.assert_close(S.linear_cross_entropy(h, w, tu), unfused(h, w, tu.long()), **TOL[dtype])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_cuda_tiled_path_parity_with_unfused(dtype):
    """On CUDA the tiles are cuBLAS matmuls driven from Python (_linear_ce_fwd_torch / _bwd_torch)."""
    h, w, b, t = (x.cuda() for x in make(1030, 8, 4100, dtype))
    check(h, w, b, t, dtype)
    check(h, w, b, t, dtype, reduction='none', label_smoothing=0.1)
    with pytest.raises(IndexError, match='out of bounds'):
        S.linear_cross_entropy(h, w, torch.full_like(t, 5000))


def test_all_targets_ignored_gives_nan_mean_like_torch():
    h, w, _, _ = make(6, 8, 30, torch.float64)
    t = torch.full((6,), -100)
    assert torch.isnan(S.linear_cross_entropy(h, w, t)) and torch.isnan(unfused(h, w, t))
    assert S.linear_cross_entropy(h, w, t, reduction='sum') == 0


def test_kernel_matches_tiled_torch_version():
    """The C++ op and the tiled torch code (what CUDA runs) agree on every output of the forward and backward."""
    h, w, b, t = make(1030, 8, 4100, torch.float64, seed=4)
    for red in (0, 2):
        for eps in (0.0, 0.25):
            a = S._OPS.linear_cross_entropy_fwd(h, w, b, t, -100, eps, red)
            r = S._linear_ce_fwd_torch(h, w, b, t, -100, eps, red)
            for x, y in zip(a, r):
                torch.testing.assert_close(x, y, **TOL[torch.float64])
            g = torch.randn(1030, dtype=torch.float64) if red == 0 else torch.tensor(1.7, dtype=torch.float64)
            ga = S._OPS.linear_cross_entropy_bwd(g, h, w, b, t, a[1], a[2], -100, eps, red)
            gr = S._linear_ce_bwd_torch(g, h, w, b, t, a[1], a[2], -100, eps, red)
            for x, y in zip(ga, gr):
                torch.testing.assert_close(x, y, **TOL[torch.float64])


def test_second_derivatives_torch_func_meta_and_compile():
    h, w, b, t = make(7, 5, 40, torch.float64)
    f = lambda hh, ww: S.linear_cross_entropy(hh, ww, t, b, label_smoothing=0.1)
    fr = lambda hh, ww: unfused(hh, ww, t, b, label_smoothing=0.1)
    hr = h.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda hh: f(hh, w), (hr,))
    torch.testing.assert_close(grad(f, argnums=(0, 1))(h, w), grad(fr, argnums=(0, 1))(h, w), **TOL[torch.float64])
    hm = torch.empty(4096, 512, device='meta', requires_grad=True)
    wm = torch.empty(50257, 512, device='meta', requires_grad=True)
    loss = S.linear_cross_entropy(hm, wm, torch.empty(4096, dtype=torch.long, device='meta'))
    loss.backward()
    assert loss.shape == () and hm.grad.shape == hm.shape and wm.grad.shape == wm.shape
    fc = torch.compile(f, fullgraph=True, dynamic=False, backend='aot_eager')
    hc, wc = h.clone().requires_grad_(), w.clone().requires_grad_()
    hr, wr = h.clone().requires_grad_(), w.clone().requires_grad_()
    yc, yr = fc(hc, wc), fr(hr, wr)
    torch.testing.assert_close(yc, yr, **TOL[torch.float64])
    yc.backward(); yr.backward()
    torch.testing.assert_close((hc.grad, wc.grad), (hr.grad, wr.grad), **TOL[torch.float64])


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_vmap_over_hidden_and_targets_shared_or_batched_weight(reduction):
    "vmap: one weight for the batch (one kernel call over B*N rows) and a batched weight (entries one by one)."
    h, w, b, t = make(6, 5, 30, torch.float64)
    hb, tb = torch.stack([h, 2 * h, -h]), torch.stack([t, t.flip(0), t])              # (3, 6, 5), (3, 6)
    f = lambda hh, ww, bb, tt: S.linear_cross_entropy(hh, ww, tt, bb, reduction=reduction, label_smoothing=0.1)
    fr = lambda hh, ww, bb, tt: unfused(hh, ww, tt, bb, reduction=reduction, label_smoothing=0.1)
    for dims, args in [((0, None, None, 0), (hb, w, b, tb)), ((0, None, None, None), (hb, w, b, t)),
                       ((None, 0, 0, None), (h, torch.stack([w, w * 0.5, -w]), torch.stack([b, b, 2 * b]), t))]:
        torch.testing.assert_close(vmap(f, in_dims=dims)(*args), vmap(fr, in_dims=dims)(*args), **TOL[torch.float64])
    # per-sample gradients: vmap of grad
    gs = lambda fn: vmap(grad(lambda hh, tt: fn(hh, w, b, tt).sum()), in_dims=(0, 0))(hb, tb)
    torch.testing.assert_close(gs(f), gs(fr), **TOL[torch.float64])


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_forward_mode_jvp_and_jacfwd(reduction):
    "Forward mode: the tangent is computed tile by tile (no (N, V) logits), checked against the unfused path's."
    h, w, b, t = make(7, 5, 40, torch.float64)
    f = lambda hh, ww, bb: S.linear_cross_entropy(hh, ww, t, bb, reduction=reduction, label_smoothing=0.1)
    fr = lambda hh, ww, bb: unfused(hh, ww, t, bb, reduction=reduction, label_smoothing=0.1)
    g = torch.Generator().manual_seed(3)
    tangents = tuple(torch.randn(x.shape, generator=g, dtype=torch.float64) for x in (h, w, b))
    (yo, to), (yr, tr) = jvp(f, (h, w, b), tangents), jvp(fr, (h, w, b), tangents)
    torch.testing.assert_close((yo, to), (yr, tr), **TOL[torch.float64])
    torch.testing.assert_close(jacfwd(f)(h, w, b), jacfwd(fr)(h, w, b), **TOL[torch.float64])


def test_bad_input():
    h, w, b, t = make(4, 3, 10, torch.float32, ignore=False)
    cases = [
        (lambda: S.linear_cross_entropy(h, w, torch.tensor([0, 1, 10, 2])), IndexError, 'out of bounds'),
        (lambda: S.linear_cross_entropy(h, w[:, :2], t), ValueError, 'share d'),
        (lambda: S.linear_cross_entropy(h, w, t[:3]), ValueError, 'target shape'),
        (lambda: S.linear_cross_entropy(h, w, t.int()), TypeError, 'int64'),
        (lambda: S.linear_cross_entropy(h, w, t, bias=torch.zeros(9)), ValueError, 'bias'),
        (lambda: S.linear_cross_entropy(h, w, t, bias=[0.0] * 10), TypeError, 'bias'),
        (lambda: S.linear_cross_entropy(h.tolist(), w, t), TypeError, 'hidden'),
        (lambda: S.linear_cross_entropy(h, w, t, reduction='avg'), ValueError, 'reduction'),
        (lambda: S.linear_cross_entropy(h.long(), w, t), TypeError, 'floating-point'),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            fn()


MEMORY_SCRIPT = textwrap.dedent('''
    import sys, torch, torch.nn.functional as F
    from tinygrad_book.softmax import linear_cross_entropy
    def status(key): return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024
    N, d, V, fused = 1024, 128, 32768, sys.argv[1] == 'fused'
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, d, generator=g).requires_grad_()
    w = (torch.randn(V, d, generator=g) * 0.05).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    open('/proc/self/clear_refs', 'w').write('5')        # reset the peak (VmHWM) to the current resident size
    before = status('VmRSS')                              # inputs allocated
    loss = linear_cross_entropy(h, w, t) if fused else F.cross_entropy(h @ w.T, t)
    loss.backward()
    print(status('VmHWM') - before)
''')


def test_peak_memory_growth_is_a_fraction_of_the_unfused_path():
    """Peak RSS growth during one forward + backward, in a fresh process (Linux: the peak is reset through
    /proc/self/clear_refs after the inputs exist). (1024, 128) hidden, 32768 classes: the unfused logits and their
    gradient are 128 MiB each; the fused path holds one 16 MiB tile, plus the weight's gradient (16 MiB) that both
    paths allocate."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    peak = {m: int(subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, m], capture_output=True, text=True, env=env,
                                  check=True).stdout.split()[-1]) for m in ('fused', 'unfused')}
    assert peak['unfused'] > 200 * 2**20, peak                   # the measurement sees the logits
    assert peak['fused'] < 0.25 * peak['unfused'], peak          # the bar
