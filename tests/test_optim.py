"""Parity of tinygrad_book.optim with torch.optim: parameter trajectories over 20 steps, float64, from the same start on
the same problem, agree to 1e-9 relative (the bar); measured deviations are ~1e-15, rounding of the same formulas in a
different order. The problem is a least-squares fit plus a bias and a second parameter group, so per-group
hyperparameters, weight decay on several shapes and parameters without a gradient are all exercised.

On the C++ backend SGD, Adam and AdamW run a fused kernel (csrc/optim.cpp: one pass per parameter, one call per group)
by default: the same trajectories against torch on that backend, and bitwise equality with the array-op version
(`fused=False`), which the kernel computes in the same order and precision.
"""
import math
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinygrad_book import optim
from tinygrad_book.autodiff import Tensor

rng = np.random.default_rng(0)
A, B = rng.standard_normal((10, 4)), rng.standard_normal((10, 3))
W0, B0 = rng.standard_normal((4, 3)), rng.standard_normal(3)


def trajectories(make, steps=20, groups=False, clip=None, device='numpy'):
    w, b = Tensor(W0.copy(), requires_grad=True, device=device), Tensor(B0.copy(), requires_grad=True, device=device)
    wt, bt = torch.tensor(W0.copy(), requires_grad=True), torch.tensor(B0.copy(), requires_grad=True)
    unused, unused_t = Tensor(np.ones(2), requires_grad=True, device=device), torch.ones(2, dtype=torch.float64, requires_grad=True)
    if groups:
        ours = make(optim, [{'params': [w, unused]}, {'params': [b], 'lr': 0.003}])
        ref = make(torch.optim, [{'params': [wt, unused_t]}, {'params': [bt], 'lr': 0.003}])
    else: ours, ref = make(optim, [w, b, unused]), make(torch.optim, [wt, bt, unused_t])
    worst = 0.0
    for _ in range(steps):
        ours.zero_grad(); ref.zero_grad()
        r = Tensor(A, device=device) @ w + b - Tensor(B, device=device); ((r * r).sum() + (w * w * w).sum() * 0.1).backward()
        rt = torch.tensor(A) @ wt + bt - torch.tensor(B); ((rt * rt).sum() + (wt ** 3).sum() * 0.1).backward()
        if clip:
            n1 = optim.clip_grad_norm_([w, b], clip); n2 = torch.nn.utils.clip_grad_norm_([wt, bt], clip)
            assert abs(n1 - float(n2)) <= 1e-12 * float(n2)
        ours.step(); ref.step()
        for o, t in ((w, wt), (b, bt), (unused, unused_t)):
            tv = t.detach().numpy()
            worst = max(worst, float(np.abs(o.numpy() - tv).max() / np.abs(tv).max()))
    return worst


CONFIGS = {
    'sgd': lambda m, p: m.SGD(p, lr=0.01),
    'sgd-momentum-dampening-wd': lambda m, p: m.SGD(p, lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.05),
    'sgd-nesterov': lambda m, p: m.SGD(p, lr=0.01, momentum=0.8, nesterov=True, weight_decay=0.01),
    'rmsprop': lambda m, p: m.RMSprop(p, lr=0.01),
    'rmsprop-centered-momentum-wd': lambda m, p: m.RMSprop(p, lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1),
    'adam': lambda m, p: m.Adam(p, lr=0.05),
    'adam-l2-amsgrad': lambda m, p: m.Adam(p, lr=0.05, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True),
    'adamw': lambda m, p: m.AdamW(p, lr=0.05),
    'adamw-wd-amsgrad': lambda m, p: m.AdamW(p, lr=0.05, weight_decay=0.3, eps=1e-6, amsgrad=True),
}


@pytest.mark.parametrize('device', ['numpy', 'cpu'])
@pytest.mark.parametrize('groups', [False, True], ids=['one-group', 'two-groups'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_trajectory_equals_torch(name, groups, device):
    "numpy: the array-op updates; cpu: the fused kernel for SGD/Adam/AdamW (the default there), array ops for RMSprop."
    assert trajectories(CONFIGS[name], groups=groups, device=device) < 1e-9


def test_trajectory_with_clipping_equals_torch():
    assert trajectories(CONFIGS['adamw'], clip=1.0) < 1e-9
    assert trajectories(CONFIGS['sgd-nesterov'], clip=0.5) < 1e-9


def test_clip_grad_norm_inf_and_noop():
    g = rng.standard_normal((5, 3))
    p, pt = Tensor(np.zeros((5, 3)), requires_grad=True), torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    p.grad, pt.grad = Tensor(g.copy()), torch.tensor(g.copy())
    n1, n2 = optim.clip_grad_norm_([p], 0.5, norm_type=math.inf), torch.nn.utils.clip_grad_norm_([pt], 0.5, norm_type=math.inf)
    assert abs(n1 - float(n2)) < 1e-12
    np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=1e-12)
    p.grad = Tensor(g.copy())
    optim.clip_grad_norm_([p], 1e9)
    np.testing.assert_array_equal(p.grad.numpy(), g)


def test_warmup_cosine_closed_form():
    "lr(step) = base * (step+1)/W during warmup, then base * (m + (1-m)/2 (1 + cos(pi t))) with t the cosine progress."
    w = Tensor(np.zeros(1), requires_grad=True)
    opt = optim.SGD([w], lr=0.4)
    sched = optim.WarmupCosine(opt, warmup_steps=4, total_steps=14, min_factor=0.1)
    lrs = []
    for _ in range(16): lrs.append(sched.get_last_lr()[0]); sched.step()
    np.testing.assert_allclose(lrs[:4], [0.1, 0.2, 0.3, 0.4])
    assert lrs[4] == pytest.approx(0.4) and lrs[9] == pytest.approx(0.4 * (0.1 + 0.9 * 0.5))
    assert lrs[14] == pytest.approx(0.04) and lrs[15] == pytest.approx(0.04)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    with pytest.raises(ValueError, match="warmup_steps"): optim.warmup_cosine(0, 5, 5)


def test_errors_like_torch():
    w = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match="Invalid learning rate value: -1"): optim.SGD([w], lr=-1)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"): optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"): optim.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"): optim.Adam([])
    with pytest.raises(ValueError, match="does not require grad"): optim.Adam([Tensor(np.zeros(2))])


def test_step_bumps_version_so_stale_graphs_fail():
    "An update between forward and backward is caught by the engine's version counters (as in torch)."
    w = Tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    y = (w * w).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an in-place operation"): y.backward()


def test_cpu_backend_step():
    "The C++ backend takes the same steps (float64)."
    w, wt = Tensor(W0.copy(), requires_grad=True, device='cpu'), torch.tensor(W0.copy(), requires_grad=True)
    o, ot = optim.AdamW([w], lr=0.05, weight_decay=0.1), torch.optim.AdamW([wt], lr=0.05, weight_decay=0.1)
    for _ in range(5):
        o.zero_grad(); ot.zero_grad()
        (w * w * w).sum().backward(); (wt ** 3).sum().backward()
        o.step(); ot.step()
    assert w.device == 'cpu'
    np.testing.assert_allclose(w.numpy(), wt.detach().numpy(), rtol=1e-9)


FUSABLE = [k for k in CONFIGS if not k.startswith('rmsprop')]


def fused_vs_ops(make, dtype, steps=20, switch_at=None):
    """The same 20 steps with fused=True and with fused=False on the C++ backend; returns both final parameter sets.
    `wt` enters the loss transposed, so its gradient is a transposed (non-compact) view the fused path must copy.
    With `switch_at`, the fused run starts with array ops and switches to the kernel at that step (adopting state the
    array ops left, including the aliases they create: AMSGrad's first max is v itself, SGD's first buffer is g)."""
    out = []
    for fused in (True, False):
        w = Tensor(W0.astype(dtype), requires_grad=True, device='cpu')
        wt = Tensor(W0.T.astype(dtype).copy(), requires_grad=True, device='cpu')
        b = Tensor(B0.astype(dtype), requires_grad=True, device='cpu')
        opt = make(optim, [w, wt, b])
        for g in opt.param_groups: g['fused'] = fused if switch_at is None else False
        a, t = Tensor(A.astype(dtype), device='cpu'), Tensor(B.astype(dtype), device='cpu')
        for k in range(steps):
            if switch_at is not None and k == switch_at and fused:
                for g in opt.param_groups: g['fused'] = True
            opt.zero_grad()
            r = a @ w + a @ wt.transpose() * 0.5 + b - t
            ((r * r).sum() + (w * w * w).sum() * 0.1).backward()
            opt.step()
        out.append([p.numpy() for p in (w, wt, b)])
    return out


@pytest.mark.parametrize('dtype', [np.float32, np.float64], ids=['f32', 'f64'])
@pytest.mark.parametrize('name', FUSABLE)
def test_fused_equals_array_ops_bitwise(name, dtype):
    "The kernel does the reference's arithmetic in the same order and precision: equal to the last bit over 20 steps."
    fused, ops = fused_vs_ops(CONFIGS[name], dtype)
    for f, o in zip(fused, ops): np.testing.assert_array_equal(f, o)


@pytest.mark.parametrize('switch_at', [1, 3])
@pytest.mark.parametrize('make', [lambda m, p: m.SGD(p, lr=0.01, momentum=0.9), CONFIGS['adam-l2-amsgrad'], CONFIGS['adamw-wd-amsgrad']],
                         ids=['sgd-momentum', 'adam-amsgrad', 'adamw-amsgrad'])
def test_fused_adopts_array_op_state(make, switch_at):
    "After one array-op step, SGD's buffer is the gradient array and AMSGrad's max is v itself: the kernel must copy them."
    fused, ops = fused_vs_ops(make, np.float64, steps=8, switch_at=switch_at)
    for f, o in zip(fused, ops): np.testing.assert_array_equal(f, o)


def test_fused_is_the_default_on_cpu_only():
    "fused=None: the kernel on the C++ backend (state made by it is compact and owned), array ops on numpy."
    for device, expect in (('cpu', True), ('numpy', False)):
        w = Tensor(W0.copy(), requires_grad=True, device=device)
        opt = optim.AdamW([w], lr=0.1)
        calls = []
        opt._fused_step = lambda *a, _f=opt._fused_step: (calls.append(1), _f(*a))
        (w * w).sum().backward(); opt.step()
        assert bool(calls) == expect, device
    with pytest.raises(RuntimeError, match=r"fused=True needs compact float32 or float64 parameters on the C\+\+ backend \('cpu'\): got a float64 parameter of shape \(4, 3\) on 'numpy'"):
        optim.Adam([Tensor(W0.copy(), requires_grad=True)], fused=True)
    with pytest.raises(ValueError, match="fused must be None, False or True"): optim.SGD([w], lr=0.1, fused='yes')
    assert 'fused=None' in repr(optim.AdamW([w]))


def test_fused_step_bumps_version():
    w = Tensor(np.ones(3), requires_grad=True, device='cpu')
    opt = optim.SGD([w], lr=0.1, fused=True)
    (w * w).sum().backward()
    y = (w * w).sum()
    v = w._version
    opt.step()
    assert w._version == v + 1
    with pytest.raises(RuntimeError, match="modified by an in-place operation"): y.backward()


def test_fused_kernel_checks_its_arguments():
    "The op itself refuses inconsistent lists and out-of-bounds offsets (a wrong call never writes out of bounds)."
    ops = optim._fused_ops()
    p, g = torch.zeros(4), torch.zeros(4)
    with pytest.raises(RuntimeError, match="same length"):
        ops.sgd_([p], [0], [g, g], [0, 0], [], [4], 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(RuntimeError, match="outside its buffer"):
        ops.sgd_([p], [2], [g], [0], [], [4], 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(RuntimeError, match="has dtype"):
        ops.adam_([p], [0], [g.double()], [0], [p.clone()], [p.clone()], [], [4], [1], 0.1, 0.9, 0.99, 1e-8, 0.0, True, False)


def test_fused_falls_back_for_a_hand_set_gradient():
    "A float64 gradient set by hand on a float32 parameter: fused=None takes the array ops (as on numpy), fused=True says why."
    w = Tensor(np.ones(3, np.float32), requires_grad=True, device='cpu')
    w.grad = Tensor(np.full(3, 0.5), device='cpu')
    optim.SGD([w], lr=0.1).step()
    np.testing.assert_allclose(w.numpy(), 0.95, rtol=1e-6)
    w.grad = Tensor(np.full(3, 0.5), device='cpu')
    with pytest.raises(RuntimeError, match="gradient in its parameter's dtype"): optim.SGD([w], lr=0.1, fused=True).step()
