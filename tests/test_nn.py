"""Parity of tinygrad_book.nn with torch.nn: each module, loaded with the weights of its torch twin (through
`load_state_dict` of torch's own `state_dict()`), gives the same outputs, input gradients and parameter gradients,
in train and eval mode, and the same BatchNorm running statistics.

Tolerances: float32 max|ours - torch| <= 1e-5 * max|torch| + 1e-6; float64 1e-10 relative + 1e-12. A bias right
before BatchNorm (in training) has an exact gradient of 0 (BatchNorm subtracts the batch mean); both libraries return
rounding noise there, so those entries are checked to be at most 1e-5 (float32) / 1e-12 (float64) in both.
Both implementations compute the same sums in different orders, so float32 results differ by a few ulps of the
largest intermediate value, well inside 1e-5.
"""
import math
import numpy as np
import pytest
import torch
import torch.nn as tnn
from hypothesis import given, settings, strategies as st

from tinygrad_book import nn
from tinygrad_book.autodiff import Tensor

TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-10, 1e-12)}


def _close(name, ours, ref, dt):
    rtol, atol = TOL[dt]
    assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
    err = np.abs(ours - ref).max() if ours.size else 0.0
    assert err <= rtol * np.abs(ref).max() + atol, f"{name}: max error {err:.3g}, scale {np.abs(ref).max():.3g}"


def check(ours, theirs, x_np, train, dt, input_grad=True, zero_grads=()):
    theirs = theirs.to(torch.float64 if dt == np.float64 else torch.float32)
    ours.to(dtype=dt)
    ours.load_state_dict(theirs.state_dict())
    ours.train(train); theirs.train(train)
    x = Tensor(x_np, requires_grad=input_grad)
    xt = torch.tensor(x_np, requires_grad=input_grad)
    y, yt = ours(x), theirs(xt)
    w = np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype(dt)
    (y * Tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    _close('output', y.numpy(), yt.detach().numpy(), dt)
    if input_grad: _close('input grad', x.grad.numpy(), xt.grad.numpy(), dt)
    tp = dict(theirs.named_parameters())
    assert [k for k, _ in ours.named_parameters()] == list(tp)
    for k, p in ours.named_parameters():
        if train and k in zero_grads:
            bound = 1e-5 if dt == np.float32 else 1e-12
            assert np.abs(p.grad.numpy()).max() <= bound and np.abs(tp[k].grad.numpy()).max() <= bound, k
        else: _close(k, p.grad.numpy(), tp[k].grad.numpy(), dt)
    ts = theirs.state_dict()
    assert list(ours.state_dict()) == list(ts)
    for k, v in ours.state_dict().items(): _close(k, v.astype(np.float64), ts[k].numpy().astype(np.float64), np.float64 if v.dtype.kind == 'i' else dt)


rng = np.random.default_rng(0)
def x2(n=7, f=6): return rng.standard_normal((n, f))
def img(n=3, c=3, h=9, w=8): return rng.standard_normal((n, c, h, w))

class TorchResidual(tnn.Module):
    def __init__(self, fn): super().__init__(); self.fn = fn
    def forward(self, x): return x + self.fn(x)

CASES = {
    'linear': (lambda: nn.Linear(6, 4), lambda: tnn.Linear(6, 4), x2),
    'linear-nobias-3d': (lambda: nn.Linear(6, 4, bias=False), lambda: tnn.Linear(6, 4, bias=False), lambda: rng.standard_normal((2, 3, 6))),
    'mlp': (lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid()),
            lambda: tnn.Sequential(tnn.Linear(6, 8), tnn.ReLU(), tnn.Linear(8, 8), tnn.Tanh(), tnn.Linear(8, 3), tnn.Sigmoid()), x2),
    'gelu': (lambda: nn.Sequential(nn.Linear(6, 5), nn.GELU()), lambda: tnn.Sequential(tnn.Linear(6, 5), tnn.GELU()), x2),
    'gelu-tanh': (lambda: nn.GELU('tanh'), lambda: tnn.GELU('tanh'), x2),
    'layernorm': (lambda: nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5)), lambda: tnn.Sequential(tnn.Linear(6, 5), tnn.LayerNorm(5)), x2),
    'layernorm-2d-shape': (lambda: nn.LayerNorm((3, 4)), lambda: tnn.LayerNorm((3, 4)), lambda: rng.standard_normal((2, 3, 4))),
    'batchnorm1d': (lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)), lambda: tnn.Sequential(tnn.Linear(6, 5), tnn.BatchNorm1d(5)), x2),
    'batchnorm1d-3d': (lambda: nn.BatchNorm1d(4), lambda: tnn.BatchNorm1d(4), lambda: rng.standard_normal((3, 4, 5))),
    'batchnorm2d': (lambda: nn.BatchNorm2d(3), lambda: tnn.BatchNorm2d(3), img),
    'flatten-residual': (lambda: nn.Sequential(nn.Flatten(), nn.Residual(nn.Sequential(nn.Linear(12, 12), nn.ReLU()))),
                         lambda: tnn.Sequential(tnn.Flatten(), TorchResidual(tnn.Sequential(tnn.Linear(12, 12), tnn.ReLU()))),
                         lambda: rng.standard_normal((4, 3, 4))),
    'conv': (lambda: nn.Conv2d(3, 4, 3), lambda: tnn.Conv2d(3, 4, 3), img),
    'conv-stride-pad': (lambda: nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 2)), lambda: tnn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 2)), img),
    'conv-dilation': (lambda: nn.Conv2d(3, 2, 3, dilation=2, bias=False), lambda: tnn.Conv2d(3, 2, 3, dilation=2, bias=False), img),
    'maxpool': (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), img),
    'maxpool-overlap-pad': (lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: tnn.MaxPool2d(3, stride=2, padding=1), img),
    'cnn': (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4, 3)),
            lambda: tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(16 * 4, 3)),
            lambda: rng.standard_normal((3, 3, 8, 8))),
    'dropout-eval-identity': (lambda: nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5)), lambda: tnn.Sequential(tnn.Linear(6, 4), tnn.Dropout(0.5)), x2),
}


@pytest.mark.parametrize('dt', [np.float32, np.float64], ids=['f32', 'f64'])
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('case', list(CASES))
def test_parity_with_torch(case, train, dt):
    if case.startswith('dropout') and train: pytest.skip('dropout masks are random: see test_dropout_train')
    ours, theirs, x = CASES[case]
    torch.manual_seed(0)
    check(ours(), theirs(), x().astype(dt), train, dt, zero_grads={'0.bias'} if case in ('batchnorm1d', 'cnn') else ())


def test_batchnorm_running_stats_over_steps():
    "Three training batches, then eval: running mean/var and num_batches_tracked follow torch's."
    torch.manual_seed(0)
    ours, theirs = nn.BatchNorm2d(3).double(), tnn.BatchNorm2d(3, momentum=0.3).double()
    ours.momentum = 0.3
    ours.load_state_dict(theirs.state_dict())
    for _ in range(3):
        x = img()
        ours(Tensor(x)); theirs(torch.tensor(x))
    for k, v in ours.state_dict().items(): _close(k, v.astype(np.float64), theirs.state_dict()[k].numpy().astype(np.float64), np.float64)
    ours.eval(); theirs.eval()
    x = img()
    _close('eval output', ours(Tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), np.float64)


def test_embedding_and_losses():
    torch.manual_seed(0)
    e, et = nn.Embedding(10, 4).double(), tnn.Embedding(10, 4).double()
    e.load_state_dict(et.state_dict())
    idx = np.array([[1, 2, 2], [9, 0, 1]])
    y, yt = e(idx), et(torch.tensor(idx))
    w = rng.standard_normal((2, 3, 4))
    (y * Tensor(w)).sum().backward(); (yt * torch.tensor(w)).sum().backward()
    _close('embedding', y.numpy(), yt.detach().numpy(), np.float64)
    _close('embedding grad (repeated rows accumulate)', e.weight.grad.numpy(), et.weight.grad.numpy(), np.float64)
    logits = rng.standard_normal((6, 5)) * 30     # large logits: no overflow through logsumexp
    target = rng.integers(0, 5, 6)
    for red in ('mean', 'sum', 'none'):
        x, xt = Tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
        l, lt = nn.CrossEntropyLoss(red)(x, target), tnn.CrossEntropyLoss(reduction=red)(xt, torch.tensor(target))
        l.sum().backward(); lt.sum().backward()
        _close(f'ce {red}', l.numpy(), lt.detach().numpy(), np.float64)
        _close(f'ce grad {red}', x.grad.numpy(), xt.grad.numpy(), np.float64)
        a, at = Tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
        m, mt = nn.MSELoss(red)(a, logits[::-1].copy()), tnn.MSELoss(reduction=red)(at, torch.tensor(logits[::-1].copy()))
        m.sum().backward(); mt.sum().backward()
        _close(f'mse {red}', m.numpy(), mt.detach().numpy(), np.float64)
        _close(f'mse grad {red}', a.grad.numpy(), at.grad.numpy(), np.float64)


def test_dropout_train():
    "Inverted dropout: kept entries are scaled by 1/(1-p), the rest are 0; the gradient uses the same mask; eval is the identity."
    d = nn.Dropout(0.25, rng=0)
    x = Tensor(np.ones((200, 50)), requires_grad=True)
    y = d(x)
    v = y.numpy()
    assert set(np.unique(v)) <= {0.0, 1 / 0.75}
    assert abs((v == 0).mean() - 0.25) < 0.02          # 10,000 Bernoulli draws: std 0.0043
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), v)
    assert d.eval()(x) is x


def test_state_dict_errors_name_key_and_shapes():
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    sd = tnn.Sequential(tnn.Linear(4, 3), tnn.ReLU(), tnn.Linear(3, 5)).state_dict()
    with pytest.raises(RuntimeError, match=r"size mismatch for 2\.weight: .*shape \(5, 3\).*shape in current model is \(2, 3\)"):
        m.load_state_dict(sd)
    good = tnn.Sequential(tnn.Linear(4, 3), tnn.ReLU(), tnn.Linear(3, 2)).state_dict()
    before = m.state_dict()
    missing = {k: v for k, v in good.items() if k != '0.bias'}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: '0\.bias'"): m.load_state_dict(missing)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: 'extra'"): m.load_state_dict({**good, 'extra': np.zeros(1)})
    for k, v in m.state_dict().items(): np.testing.assert_array_equal(v, before[k])   # nothing written on error
    res = m.load_state_dict(missing, strict=False)
    assert res.missing_keys == ['0.bias'] and res.unexpected_keys == []
    # numpy values load too, cast to the parameter's dtype
    m.load_state_dict({k: v.numpy().astype(np.float64) for k, v in good.items()})
    np.testing.assert_array_equal(m.state_dict()['2.weight'], good['2.weight'].numpy())


def test_linear_wrong_features_names_both_sizes():
    with pytest.raises(ValueError, match=r"last dimension is 5, expected 4"):
        nn.Linear(4, 2)(Tensor(np.zeros((3, 5), np.float32)))
    with pytest.raises(ValueError, match="in_features must be a positive integer"): nn.Linear(0, 2)
    with pytest.raises(ValueError, match=r"expects an input of shape \(N, 3, H, W\), got \(2, 4, 5, 5\)"):
        nn.Conv2d(3, 2, 3)(Tensor(np.zeros((2, 4, 5, 5), np.float32)))
    with pytest.raises(IndexError, match="index out of range"): nn.Embedding(5, 2)(np.array([5]))
    with pytest.raises(IndexError, match="Target 7 is out of bounds"): nn.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0, 7]))
    with pytest.raises(ValueError, match="reduction must be"): nn.MSELoss('avg')
    with pytest.raises(ValueError, match="dropout probability"): nn.Dropout(1.5)


def test_module_tree_and_repr():
    m = nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()))
    assert [k for k, _ in m.named_modules()] == ['', '0', '1', '1.0', '1.1']
    assert [k for k, _ in m.named_parameters()] == ['0.weight', '0.bias', '1.0.weight', '1.0.bias']
    assert m.num_parameters() == 4 * 3 + 3 + 3 + 3
    assert not any(x.training for x in m.eval().modules()) and all(x.training for x in m.train().modules())
    t = tnn.Sequential(tnn.Linear(4, 3), tnn.Sequential(tnn.BatchNorm1d(3), tnn.ReLU()))
    assert list(m.state_dict()) == list(t.state_dict())
    assert repr(m).splitlines()[0] == 'Sequential(' and '(0): Linear(in_features=4, out_features=3, bias=True)' in repr(m)
    deep = nn.Sequential(*[nn.Sequential() for _ in range(1)])
    for _ in range(3000): deep = nn.Sequential(deep)     # 3,000 levels: iterative walks, no RecursionError
    assert len(list(deep.modules())) == 3002
    m(Tensor(np.ones((2, 4), np.float32))).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize('fn, tfn', [(nn.xavier_uniform_, torch.nn.init.xavier_uniform_), (nn.xavier_normal_, torch.nn.init.xavier_normal_),
                                      (lambda t: nn.kaiming_uniform_(t, nonlinearity='relu'), lambda t: torch.nn.init.kaiming_uniform_(t, nonlinearity='relu')),
                                      (lambda t: nn.kaiming_normal_(t, mode='fan_out', nonlinearity='relu'), lambda t: torch.nn.init.kaiming_normal_(t, mode='fan_out', nonlinearity='relu'))])
def test_init_matches_torch_distribution(fn, tfn):
    "Same distribution as torch's initialiser: std within 3% and bounds equal (uniform), on a 64x40x3x3 conv weight (23,040 draws)."
    p = nn.Parameter(np.zeros((64, 40, 3, 3)))
    fn(p)
    ref = tfn(torch.empty(64, 40, 3, 3, dtype=torch.float64)).numpy()
    a = p.numpy()
    assert abs(a.std() / ref.std() - 1) < 0.03
    assert abs(a.mean()) < 0.05 * ref.std() * 3


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), bs=st.integers(1, 12), drop=st.booleans(), shuffle=st.booleans(), seed=st.integers(0, 5))
def test_dataloader_property(n, bs, drop, shuffle, seed):
    "Every row appears exactly once per epoch (or all but the last partial batch with drop_last); same seed, same order."
    X, y = np.arange(n * 2.).reshape(n, 2), np.arange(n)
    dl = nn.DataLoader(X, y, batch_size=bs, shuffle=shuffle, seed=seed, drop_last=drop)
    batches = [b[1].numpy() for b in dl]
    assert len(batches) == len(dl) == (n // bs if drop else math.ceil(n / bs))
    assert all(len(b) == bs for b in batches[:-1] if True) and (not drop or all(len(b) == bs for b in batches))
    seen = np.concatenate(batches) if batches else np.array([], int)
    assert len(set(seen.tolist())) == len(seen) == (n // bs * bs if drop else n)
    if not shuffle: assert seen.tolist() == list(range(len(seen)))
    again = [b[1].numpy() for b in nn.DataLoader(X, y, batch_size=bs, shuffle=shuffle, seed=seed, drop_last=drop)]
    assert all((a == b).all() for a, b in zip(batches, again))


def test_dataloader_errors():
    with pytest.raises(ValueError, match="array 1 has shape"): nn.DataLoader(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="batch_size=0"): nn.DataLoader(np.zeros(4), batch_size=0)


def test_cpu_backend_parity():
    "The same CNN on the C++ backend: the same outputs and gradients as torch."
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4, 3)).to('cpu')
    theirs = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(16 * 4, 3))
    ours.load_state_dict(theirs.state_dict())
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    y = ours(Tensor(x, device='cpu'))
    assert y.device == 'cpu'
    _close('cpu output', y.numpy(), theirs(torch.tensor(x)).detach().numpy(), np.float32)


@pytest.mark.parametrize('shape, bias', [((7, 6), True), ((2, 3, 6), True), ((6,), True), ((7, 6), False)],
                         ids=['2d', '3d', '1d', 'nobias'])
def test_linear_function_matches_torch(shape, bias):
    "nn.linear (one graph node, torch's F.linear) against F.linear: output and all three gradients, float64."
    x_np, w_np, b_np = rng.standard_normal(shape), rng.standard_normal((4, 6)), rng.standard_normal(4)
    x, w, b = (Tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    y, yt = nn.linear(x, w, b if bias else None), torch.nn.functional.linear(xt, wt, bt if bias else None)
    g = rng.standard_normal(tuple(yt.shape))
    (y * Tensor(g)).sum().backward(); (yt * torch.tensor(g)).sum().backward()
    _close('linear', y.numpy(), yt.detach().numpy(), np.float64)
    for name, o, t in (('x', x, xt), ('w', w, wt)) + ((('b', b, bt),) if bias else ()):
        _close(f'linear grad {name}', o.grad.numpy(), t.grad.numpy(), np.float64)
    assert w.grad.data.is_compact()                 # g.T @ x: in W's own layout (no transposed view to copy)
    with pytest.raises(ValueError, match=r"linear: input \(7, 5\), weight \(4, 6\)"):
        nn.linear(Tensor(np.zeros((7, 5))), w, b)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_cross_entropy_higher_order_like_torch(reduction):
    """The fused CrossEntropy node: double backward (create_graph), forward mode (jvp) and forward-over-reverse hvp
    against torch, float64 (1e-10), and gradcheck against central differences."""
    from tinygrad_book.autodiff import grad, hvp, jvp, gradcheck
    X, V, t = rng.standard_normal((5, 4)), rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
    wts = np.arange(5.) + 1
    f = lambda x: (nn.cross_entropy(x, t, reduction) * (Tensor(wts) if reduction == 'none' else 1)).sum()
    ft = lambda x: (torch.nn.functional.cross_entropy(x, torch.tensor(t), reduction=reduction) * (torch.tensor(wts) if reduction == 'none' else 1)).sum()
    _, hv_ref = torch.autograd.functional.hvp(ft, torch.tensor(X), torch.tensor(V))
    _close('hvp', hvp(f, Tensor(X), Tensor(V))[1].numpy(), hv_ref.numpy(), np.float64)
    x = Tensor(X, requires_grad=True)
    g, = grad(f(x), x, create_graph=True)
    _close('double backward', grad((g * Tensor(V)).sum(), x)[0].numpy(), hv_ref.numpy(), np.float64)
    _, jv_ref = torch.func.jvp(ft, (torch.tensor(X),), (torch.tensor(V),))
    _close('jvp', np.asarray(jvp(f, (Tensor(X),), (Tensor(V),))[1].numpy()), jv_ref.numpy(), np.float64)
    assert gradcheck(lambda x: nn.cross_entropy(x, t, reduction), (Tensor(X, requires_grad=True),), check_forward=True)


def test_cross_entropy_on_cpu_backend_and_twice():
    "The C++ backend's cross-entropy and gradient equal torch's (float32); a second backward is refused like torch's."
    logits = (rng.standard_normal((64, 10)) * 5).astype(np.float32)
    target = rng.integers(0, 10, 64)
    x, xt = Tensor(logits, requires_grad=True, device='cpu'), torch.tensor(logits, requires_grad=True)
    l, lt = nn.cross_entropy(x, target), torch.nn.functional.cross_entropy(xt, torch.tensor(target))
    l.backward(); lt.backward()
    _close('ce cpu', l.numpy(), lt.detach().numpy(), np.float32)
    _close('ce grad cpu', x.grad.numpy(), xt.grad.numpy(), np.float32)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"): l.backward()


def test_cross_entropy_empty_batch():
    "N = 0, like torch: mean is NaN, sum is 0, none is empty, and every backward gives an empty (0, C) gradient."
    for red, expect in (('mean', np.nan), ('sum', 0.0), ('none', np.zeros(0))):
        for create_graph in (False, True):
            x = Tensor(np.zeros((0, 3)), requires_grad=True)
            l = nn.cross_entropy(x, np.zeros(0, int), red)
            np.testing.assert_array_equal(l.numpy(), expect)
            l.sum().backward(create_graph=create_graph)
            assert x.grad.shape == (0, 3)


@pytest.mark.parametrize('device', ['numpy', 'cpu'])
def test_maxpool_node_higher_order_and_ties(device):
    """The MaxPool node (overlapping, padded windows): double backward and forward-over-reverse hvp against torch
    (float64, no ties in random data), gradcheck in both modes, and ties sharing the gradient equally."""
    from tinygrad_book.autodiff import grad, hvp, gradcheck
    X, V = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((2, 3, 7, 6))
    f = lambda x: (nn.max_pool2d(x, 3, 2, 1) ** 2).sum()
    ft = lambda x: (torch.nn.functional.max_pool2d(x, 3, 2, 1) ** 2).sum()
    _, hv_ref = torch.autograd.functional.hvp(ft, torch.tensor(X), torch.tensor(V))
    _close('maxpool hvp', hvp(f, Tensor(X, device=device), Tensor(V, device=device))[1].numpy(), hv_ref.numpy(), np.float64)
    x = Tensor(X, requires_grad=True, device=device)
    g, = grad(f(x), x, create_graph=True)
    _close('maxpool double backward', grad((g * Tensor(V, device=device)).sum(), x)[0].numpy(), hv_ref.numpy(), np.float64)
    assert gradcheck(lambda x: nn.max_pool2d(x, 3, 2, 1), (Tensor(X[:1, :1], requires_grad=True, device=device),), check_forward=True)
    t = Tensor(np.ones((1, 1, 2, 2)), requires_grad=True, device=device)
    nn.max_pool2d(t, 2).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.full((1, 1, 2, 2), 0.25))
