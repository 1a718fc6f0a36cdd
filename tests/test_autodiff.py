"""tinygrad_book.autodiff against PyTorch autograd (the oracle), in float64.

- Random expression graphs (seeded) over every op, with broadcasting in every position and non-contiguous views as
  leaves and inside the graph: values and gradients within 1e-9 relative of torch (plus an absolute floor of 1e-9 times
  the largest entry: sums with cancellation); second derivatives (create_graph) and forward mode (jvp, jacobian in both
  modes) on the same graphs against torch.autograd / torch.func.
- Targeted tests: the broadcasting matmul bug of the source post, freed graphs, .grad accumulation, no_grad/detach,
  grad(), a 100,000-op chain, version counters, detect_anomaly, gradcheck, checkpointing memory, errors.
The numpy backend runs everything; a subset runs on the C++ 'cpu' backend where it is built.
"""
import gc, math, os
import numpy as np
import pytest
import torch
import torch.func

from tinygrad_book import autodiff as A
from tinygrad_book import ndarray as nd

F64 = 'float64'
RTOL = 1e-9


def assert_close(ours, ref, rtol=RTOL, what=''):
    o = ours.data.numpy() if isinstance(ours, A.Tensor) else np.asarray(ours)
    r = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert o.shape == r.shape, f"{what}: shape {o.shape} vs torch {r.shape}"
    atol = rtol * max(1.0, float(np.abs(r).max())) if r.size else 0
    np.testing.assert_allclose(o, r, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------------------------ random expression graphs
def _torch_index(x, idx):
    "x[idx] in torch, where slices may have negative steps (torch has none): index_select with explicit indices."
    d = 0
    for it in idx:
        if it is None: x = x.unsqueeze(d); d += 1
        elif isinstance(it, int): x = x.select(d, it)
        else:
            ind = torch.tensor(list(range(*it.indices(x.shape[d]))), dtype=torch.long)
            x = x.index_select(d, ind); d += 1
    return x


class Lib:
    "The same ops, spelled for ours ('A') or torch ('T'), so one program runs on both."
    def __init__(self, kind): self.kind = kind
    def leaf(self, a, view):
        if self.kind == 'T':
            t = torch.tensor(a, dtype=torch.float64, requires_grad=True)
            v = t.permute(view[1]) if view[0] == 'perm' else _torch_index(t, view[1]) if view[0] == 'idx' else t
            if v is not t: v.retain_grad()   # ours differentiates w.r.t. the view itself (the leaf holds the view)
            return v, v
        # ours: the leaf itself holds a non-contiguous NDArray view, made at the NDArray level
        base = nd.NDArray(a, dtype=F64)
        if view[0] == 'perm': arr = base.permute(view[1])
        elif view[0] == 'idx': arr = base[view[1]]
        else: arr = base
        t = A.Tensor(arr, requires_grad=True)
        return t, t
    def un(self, name, x):
        if name == 'relu': return x.relu()
        if name == 'safe_log': return (x * x + 0.5).log()
        if name == 'safe_sqrt': return (x * x + 0.1).sqrt()
        if name == 'exp': return x.tanh().exp()
        if name == 'pow2': return x ** 2
        if name == 'pow3': return x ** 3.0
        if name == 'rpow': return 2.0 ** x.tanh()
        if name == 'rsub': return 1.5 - x
        if name == 'rdiv': return 1.0 / (x * x + 1.0)
        if name == 'neg': return -x
        if name == 'scal': return x * 0.7 + 0.3
        return getattr(x, name)()                       # exp, tanh, sigmoid
    def bin(self, name, a, b, extra=None):
        T = self.kind == 'T'
        if name == 'add': return a + b
        if name == 'sub': return a - b
        if name == 'mul': return a * b
        if name == 'div': return a / (b * b + 0.5)
        if name == 'pow': return (a * a + 0.5) ** b.tanh()
        if name == 'maximum': return torch.maximum(a, b) if T else A.maximum(a, b)
        if name == 'where':
            c = extra
            return torch.where(torch.tensor(c), a, b) if T else A.where(A.Tensor(c.astype(np.float64)), a, b)
        if name == 'matmul': return a @ b
        raise KeyError(name)
    def red(self, name, x, axes, keep):
        T = self.kind == 'T'
        if name == 'sum': return x.sum(dim=axes, keepdim=keep) if T else x.sum(axes, keepdims=keep)
        if name == 'mean': return x.mean(dim=axes, keepdim=keep) if T else x.mean(axes, keepdims=keep)
        if name == 'max': return x.amax(dim=axes, keepdim=keep) if T else x.max(axes, keepdims=keep)
        if name == 'logsumexp': return torch.logsumexp(x, dim=axes, keepdim=keep) if T else x.logsumexp(axes, keepdims=keep)
    def move(self, name, x, arg):
        T = self.kind == 'T'
        if name == 'reshape': return x.reshape(arg)
        if name == 'permute': return x.permute(arg)
        if name == 'transpose': return x.transpose(*arg)
        if name == 'broadcast_to': return x.broadcast_to(arg)
        if name == 'getitem': return _torch_index(x, arg) if T else x[arg]
        if name == 'gather': return x[torch.tensor(arg)] if T else x[arg]      # integer array on dim 0, repeats
    def join(self, name, xs, axis):
        if self.kind == 'T': return (torch.cat if name == 'cat' else torch.stack)(xs, axis)
        return (A.cat if name == 'cat' else A.stack)(xs, axis)


UNARY = ['exp', 'tanh', 'sigmoid', 'relu', 'safe_log', 'safe_sqrt', 'pow2', 'pow3', 'rpow', 'rsub', 'rdiv', 'neg', 'scal']
BINARY = ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'where']
REDUCE = ['sum', 'mean', 'max', 'logsumexp']
LEAF_SHAPES = [(3, 4), (4,), (1, 4), (3, 1), (2, 3, 4), (2, 1, 4), (), (2, 3, 1)]


def _random_index(rng, shape):
    idx = []
    for n in shape:
        r = rng.integers(4)
        if r == 0 and n > 1: idx.append(int(rng.integers(-n, n)))
        elif r == 1: idx.append(slice(None, None, -1))
        elif r == 2 and n > 1: idx.append(slice(int(rng.integers(n)), None, int(rng.integers(1, 3))))
        else: idx.append(slice(None))
    if rng.random() < 0.3: idx.insert(int(rng.integers(len(idx) + 1)), None)
    return tuple(idx)


def make_program(seed, n_ops=12):
    """A random program: leaves (some non-contiguous views), then `n_ops` ops drawn from every op family, each
    taking earlier values, broadcasting wherever shapes allow. Returns (leaves, steps)."""
    rng = np.random.default_rng(seed)
    leaves, shapes = [], []
    for _ in range(int(rng.integers(2, 5))):
        shape = LEAF_SHAPES[int(rng.integers(len(LEAF_SHAPES)))]
        kind = rng.integers(3) if len(shape) >= 2 else 0
        if kind == 1:                                       # stored permuted: the leaf is a transposed view
            perm = tuple(int(p) for p in rng.permutation(len(shape)))
            inv = tuple(int(i) for i in np.argsort(perm))
            a = rng.standard_normal(tuple(shape[i] for i in inv))
            view = ('perm', perm)
        elif kind == 2:                                     # stored reversed and strided: a sliced view
            a = rng.standard_normal(tuple(2 * n for n in shape))
            view = ('idx', tuple(slice(None, None, -2) for _ in shape))
        else:
            a, view = rng.standard_normal(shape), ('none', None)
        leaves.append((a, view))
        shapes.append(tuple(shape))
    steps = []

    def pick(): return int(rng.integers(len(shapes)))

    for _ in range(n_ops):
        fam = rng.choice(['un', 'bin', 'bin', 'red', 'move', 'join', 'matmul'])
        i = pick(); s = shapes[i]
        if fam == 'un':
            steps.append(('un', UNARY[int(rng.integers(len(UNARY)))], (i,), None)); shapes.append(s)
        elif fam == 'bin':
            js = [j for j in range(len(shapes)) if _bcast(s, shapes[j]) is not None]
            j = js[int(rng.integers(len(js)))]
            name = BINARY[int(rng.integers(len(BINARY)))]
            out = _bcast(s, shapes[j])
            extra = rng.random(out) > 0.5 if name == 'where' else None
            if rng.random() < 0.5: i, j = j, i
            steps.append(('bin', name, (i, j), extra)); shapes.append(out)
        elif fam == 'red' and len(s):
            k = int(rng.integers(1, len(s) + 1))
            axes = tuple(sorted(int(a) for a in rng.choice(len(s), k, replace=False)))
            keep = bool(rng.random() < 0.5)
            steps.append(('red', REDUCE[int(rng.integers(len(REDUCE)))], (i,), (axes, keep)))
            shapes.append(tuple(1 if d in axes else n for d, n in enumerate(s) if keep or d not in axes))
        elif fam == 'move' and len(s):
            r = rng.integers(6)
            if r == 0:
                new = (int(np.prod(s)),) if len(s) > 1 else (1,) + s
                steps.append(('move', 'reshape', (i,), new)); shapes.append(new)
            elif r == 1:
                p = tuple(int(x) for x in rng.permutation(len(s)))
                steps.append(('move', 'permute', (i,), p)); shapes.append(tuple(s[d] for d in p))
            elif r == 2 and len(s) >= 2:
                steps.append(('move', 'transpose', (i,), (0, -1)))
                t = list(s); t[0], t[-1] = t[-1], t[0]; shapes.append(tuple(t))
            elif r == 3:
                new = (2,) + tuple(3 if n == 1 else n for n in s)
                steps.append(('move', 'broadcast_to', (i,), new)); shapes.append(new)
            elif r == 4:
                idx = _random_index(rng, s)
                steps.append(('move', 'getitem', (i,), idx)); shapes.append(_index_shape(s, idx))
            else:
                idx = rng.integers(0, s[0], size=int(rng.integers(1, 5)))
                steps.append(('move', 'gather', (i,), idx)); shapes.append((len(idx),) + s[1:])
        elif fam == 'join' and len(s):
            js = [j for j in range(len(shapes)) if len(shapes[j]) == len(s)]
            ax = int(rng.integers(len(s)))
            js_cat = [j for j in js if all(a == b for d, (a, b) in enumerate(zip(s, shapes[j])) if d != ax)]
            if rng.random() < 0.5:
                j = js_cat[int(rng.integers(len(js_cat)))]
                steps.append(('join', 'cat', (i, j), ax))
                t = list(s); t[ax] += shapes[j][ax]; shapes.append(tuple(t))
            else:
                steps.append(('join', 'stack', (i, i), ax)); shapes.append(s[:ax] + (2,) + s[ax:])
        elif fam == 'matmul' and len(s) >= 1:
            k = s[-1]
            # a right operand: a fresh leaf of shape (batch?, k, m) or (k,), broadcasting over batch dims
            bshape = [(k,), (k, 2), (2, k, 3), (1, k, 2)][int(rng.integers(4))]
            if len(s) >= 3 and len(bshape) == 3 and _bcast(s[:-2], bshape[:-2]) is None: bshape = (k, 2)
            leaves.append((rng.standard_normal(bshape), ('none', None)))
            shapes_leaf = len(leaves) - 1
            steps.append(('matmul', 'matmul', (i, ('leaf', shapes_leaf)), None))
            a2 = s if len(s) >= 2 else (1,) + s
            b2 = bshape if len(bshape) >= 2 else bshape + (1,)
            out = _bcast(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
            if len(s) == 1: out = out[:-2] + out[-1:]
            if len(bshape) == 1: out = out[:-1]
            shapes.append(out)
        else:
            steps.append(('un', 'tanh', (i,), None)); shapes.append(s)
    return leaves, steps, shapes


def _bcast(a, b):
    try: return tuple(np.broadcast_shapes(a, b))
    except ValueError: return None


def _index_shape(s, idx):
    out, d = [], 0
    for it in idx:
        if it is None: out.append(1)
        elif isinstance(it, int): d += 1
        else: out.append(len(range(*it.indices(s[d])))); d += 1
    return tuple(out)


def _execute(lib, leaf_vals, leaves, steps):
    "Every value of the program: the initial leaves (those made before any step) in order, then each step's result."
    n_first = len(leaves) - sum(1 for s in steps if s[0] == 'matmul')
    vals = [leaf_vals[k] for k in range(n_first)]
    for fam, name, args, extra in steps:
        xs = [leaf_vals[a[1]] if isinstance(a, tuple) else vals[a] for a in args]
        if fam == 'un': vals.append(lib.un(name, xs[0]))
        elif fam == 'bin': vals.append(lib.bin(name, xs[0], xs[1], extra))
        elif fam == 'red': vals.append(lib.red(name, xs[0], *extra))
        elif fam == 'move': vals.append(lib.move(name, xs[0], extra))
        elif fam == 'join': vals.append(lib.join(name, xs, extra))
        else: vals.append(xs[0] @ xs[1])
    return vals


def run_program(lib, leaves, steps):
    "Execute on `lib`; returns (leaf tensors, every value)."
    roots, leaf_vals = [], {}
    for k, (a, view) in enumerate(leaves):
        r, v = lib.leaf(a, view)
        roots.append(r); leaf_vals[k] = v
    return roots, _execute(lib, leaf_vals, leaves, steps)


def loss_of(lib, vals, rng_seed):
    "A scalar touching every value: sum_k <w_k, v_k> with fixed random weights."
    rng = np.random.default_rng(rng_seed)
    total = None
    for v in vals:
        w = rng.standard_normal(tuple(v.shape))
        w = torch.tensor(w) if lib.kind == 'T' else A.Tensor(w)
        term = (v * w).sum()
        total = term if total is None else total + term
    return total


SEEDS = list(range(int(os.environ.get('AUTODIFF_SEEDS', 80))))   # the chapter runs a sample


@pytest.mark.parametrize('seed', SEEDS)
def test_random_graph_values_and_gradients(seed):
    leaves, steps, shapes = make_program(seed)
    ours, theirs = Lib('A'), Lib('T')
    ra, va = run_program(ours, leaves, steps)
    rt, vt = run_program(theirs, leaves, steps)
    for k, (a, t) in enumerate(zip(va, vt)): assert_close(a, t, what=f"value {k}")
    la, lt = loss_of(ours, va, seed), loss_of(theirs, vt, seed)
    la.backward(); lt.backward()
    for k, (a, t) in enumerate(zip(ra, rt)):
        if t.grad is None: assert a.grad is None or np.all(a.grad.data.numpy() == 0); continue
        assert_close(a.grad, t.grad, what=f"grad of leaf {k}")


@pytest.mark.parametrize('seed', SEEDS[:30])
def test_random_graph_second_derivatives(seed):
    "Gradient of <grad L, v> (a Hessian-vector product, built by create_graph=True) equals torch's."
    leaves, steps, _ = make_program(seed, n_ops=8)
    ours, theirs = Lib('A'), Lib('T')
    ra, va = run_program(ours, leaves, steps)
    rt, vt = run_program(theirs, leaves, steps)
    ga = A.grad(loss_of(ours, va, seed), ra, create_graph=True, allow_unused=True)
    gt = torch.autograd.grad(loss_of(theirs, vt, seed), rt, create_graph=True, allow_unused=True)
    rng = np.random.default_rng(seed + 1000)
    vs = [rng.standard_normal(r.shape) for r in rt]
    sa = sum(((g * A.Tensor(v)).sum() for g, v in zip(ga, vs) if g is not None), A.Tensor(0.0, dtype=F64))
    st = sum(((g * torch.tensor(v)).sum() for g, v in zip(gt, vs) if g is not None), torch.tensor(0.0, dtype=torch.float64))
    if not st.requires_grad: return  # the graph is linear in every leaf: no second derivative
    h_a = A.grad(sa, ra, allow_unused=True) if sa.requires_grad else [None] * len(ra)
    ht = torch.autograd.grad(st, rt, allow_unused=True)
    for k, (a, t) in enumerate(zip(h_a, ht)):
        if t is None: assert a is None or np.all(a.data.numpy() == 0); continue
        if a is None: assert np.all(t.numpy() == 0); continue
        assert_close(a, t, what=f"second derivative, leaf {k}")


def _program_fn(leaves, steps, lib, seed):
    "The program as a function of its leaves' values (used by jvp/jacobian): returns the vector of all values."
    def f(*xs):
        leaf_vals = {}
        for k, x in enumerate(xs):
            view = leaves[k][1]
            if lib.kind == 'T':
                v = (x.permute(view[1]) if view[0] == 'perm' else _torch_index(x, view[1]) if view[0] == 'idx' else x)
            else:
                v = (x.permute(view[1]) if view[0] == 'perm' else x[view[1]] if view[0] == 'idx' else x)
            leaf_vals[k] = v
        vals = _execute(lib, leaf_vals, leaves, steps)
        last = vals[-3:]
        if lib.kind == 'T': return torch.cat([v.reshape(-1) for v in last])
        return A.cat([v.reshape(-1) for v in last])
    return f


@pytest.mark.parametrize('seed', SEEDS[:30])
def test_random_graph_jvp_and_jacobians(seed):
    leaves, steps, _ = make_program(seed, n_ops=6)
    fa, ft = _program_fn(leaves, steps, Lib('A'), seed), _program_fn(leaves, steps, Lib('T'), seed)
    xs_np = [a for a, _ in leaves]
    rng = np.random.default_rng(seed + 7)
    ts_np = [rng.standard_normal(a.shape) for a in xs_np]
    xa = tuple(A.Tensor(a) for a in xs_np)
    xt = tuple(torch.tensor(a) for a in xs_np)
    oa, ta = A.jvp(fa, xa, tuple(A.Tensor(t) for t in ts_np))
    ot, tt = torch.func.jvp(ft, xt, tuple(torch.tensor(t) for t in ts_np))
    assert_close(oa, ot, what='jvp primal out')
    assert_close(ta, tt, what='jvp tangent out')
    if sum(a.size for a in xs_np) <= 120:
        jt = torch.func.jacrev(ft, argnums=tuple(range(len(xt))))(*xt)
        for mode in ('rev', 'fwd'):
            ja = A.jacobian(fa, xa, mode=mode)
            for k in range(len(xt)): assert_close(ja[k], jt[k], what=f"jacobian {mode} input {k}")


# ------------------------------------------------------------------ targeted: reverse mode
def t64(a, rg=True): return A.Tensor(np.asarray(a, dtype=np.float64), requires_grad=rg)
def th(a, rg=True): return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=rg)


def test_matmul_broadcast_batch_gradient_shape():
    "The source post's bug: x(5,4) @ y(2,4,3) must give x.grad of shape (5,4), summed over the batch."
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((2, 4, 3))
    xa, ya, xt, yt = t64(x), t64(y), th(x), th(y)
    (xa @ ya).sum().backward(); (xt @ yt).sum().backward()
    assert xa.grad.shape == (5, 4)
    assert_close(xa.grad, xt.grad); assert_close(ya.grad, yt.grad)


@pytest.mark.parametrize('sa,sb', [((4,), (4,)), ((4,), (4, 3)), ((5, 4), (4,)), ((2, 1, 5, 4), (3, 4, 2)),
                                   ((3, 4), (2, 1, 4, 5)), ((4,), (2, 4, 3)), ((2, 5, 4), (4,))])
def test_matmul_shapes(sa, sb):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    aa, ba, at, bt = t64(a), t64(b), th(a), th(b)
    oa, ot = aa @ ba, at @ bt
    assert_close(oa, ot)
    g = rng.standard_normal(ot.shape)
    oa.backward(A.Tensor(g)); ot.backward(torch.tensor(g))
    assert_close(aa.grad, at.grad); assert_close(ba.grad, bt.grad)


def test_every_op_on_scalars_both_sides():
    x = np.array([[0.3, -1.2, 2.0], [1.5, 0.7, -0.4]])
    fs = [lambda t: 2 + t, lambda t: t + 2, lambda t: 2 - t, lambda t: t - 2, lambda t: 3 * t, lambda t: t * 3,
          lambda t: 2 / (t * t + 1), lambda t: t / 2, lambda t: (t * t + 1) ** 1.5, lambda t: 1.7 ** t, lambda t: -t]
    for k, f in enumerate(fs):
        a, t = t64(x), th(x)
        f(a).sum().backward(); f(t).sum().backward()
        assert_close(a.grad, t.grad, what=f"f{k}")


def test_numpy_operands_on_the_left_and_numpy_interop():
    x = np.array([0.5, -1.0, 2.0])
    a, t = t64(x), th(x)
    w = np.array([1.5, 2.0, -0.5])
    ((w * a) + (w - a) / (2.0 + a * a)).sum().backward()
    ((torch.tensor(w) * t) + (torch.tensor(w) - t) / (2.0 + t * t)).sum().backward()
    assert_close(a.grad, t.grad)
    np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=1e-12)     # np.asarray(tensor) works
    assert float(a.sum()) == x.sum()


def test_second_backward_through_freed_graph_raises_like_torch():
    x = t64([1., 2.])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match='second time'):
        y.backward()
    xt = th([1., 2.])
    yt = (xt.exp() * xt).sum(); yt.backward()
    with pytest.raises(RuntimeError, match='second time'): yt.backward()


def test_retain_graph_and_grad_accumulation():
    x = t64([1., 2., 3.])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * 2 * np.array([1., 2., 3.]))
    (x * 5).sum().backward()                # a third graph accumulates too
    np.testing.assert_array_equal(x.grad.numpy(), 4 * np.array([1., 2., 3.]) + 5)


def test_backward_needs_grad_for_non_scalar_and_checks_its_shape():
    x = t64([1., 2.])
    with pytest.raises(RuntimeError, match='scalar outputs'): (x * 2).backward()
    with pytest.raises(RuntimeError, match=r'\(3,\).*\(2,\)'): (x * 2).backward(A.Tensor(np.ones(3)))
    with pytest.raises(RuntimeError, match='does not require grad'): A.Tensor([1.]).backward()


def test_detach_and_no_grad():
    x = t64([1., 2.])
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    with A.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    @A.no_grad()
    def f(t): return t * 3
    assert not f(x).requires_grad
    assert A.is_grad_enabled()
    z = (x * d).sum(); z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1., 2.])   # d is a constant


def test_grad_function_like_torch():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((2,))
    aa, ba, at, bt = t64(a), t64(b), th(a), th(b)
    ya, yt = (aa * ba).tanh(), (at * bt).tanh()
    mid_a, mid_t = ya * 2, yt * 2
    g = rng.standard_normal((3, 2))
    ra = A.grad([mid_a], [aa, ba, ya], [A.Tensor(g)])
    rt = torch.autograd.grad([mid_t], [at, bt, yt], [torch.tensor(g)])
    assert isinstance(ra, tuple) and len(ra) == 3
    for p, q in zip(ra, rt): assert_close(p, q)
    assert aa.grad is None                                   # grad() does not touch .grad
    c = t64([1.])
    with pytest.raises(RuntimeError, match='not used'): A.grad((aa * 2).sum(), [c])
    assert A.grad((aa * 2).sum(), [c], allow_unused=True) == (None,)


def test_higher_order_derivatives_of_tanh():
    "d^k/dx^k tanh at x, k = 1..4, by repeated create_graph, against torch."
    xa, xt = t64([0.3, -0.8]), th([0.3, -0.8])
    ya, yt = xa.tanh().sum(), xt.tanh().sum()
    for k in range(4):
        ga, = A.grad(ya, xa, create_graph=True)
        gt, = torch.autograd.grad(yt, xt, create_graph=True)
        assert_close(ga, gt, what=f"order {k + 1}")
        ya, yt = ga.sum(), gt.sum()


def test_backward_create_graph_then_grad_of_grad():
    xa, xt = t64([0.5, 1.5]), th([0.5, 1.5])
    (xa ** 3).sum().backward(create_graph=True)
    (xt ** 3).sum().backward(create_graph=True)
    g2a, = A.grad(xa.grad.sum(), xa); g2t, = torch.autograd.grad(xt.grad.sum(), xt)
    assert_close(g2a, g2t)


def test_chain_of_100k_ops_backpropagates():
    "No RecursionError (the topological sort and the graph's deallocation are iterative-safe)."
    n = 100_000
    x = t64([1.0])
    y = x
    for _ in range(n): y = y * 1.00001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.00001 ** n], rtol=1e-9)
    del y                                                     # freeing a 100k-deep graph must not crash either


def test_second_backward_frees_like_torch_per_op():
    "torch keeps the scalar of x * 2 (second backward fails) but nothing for x + 1 or sum (it works): so do we."
    for f in [lambda x: (x * 2).sum(), lambda x: (x + 1).sum(), lambda x: (x * x).sum(), lambda x: (x / 2).sum(),
              lambda x: x.sum(), lambda x: x.mean(), lambda x: x.reshape(3, 1).sum(), lambda x: x.relu().sum(),
              lambda x: (x ** 2).sum()]:
        outcomes = []
        for lib in (A, torch):
            x = t64(np.ones(3)) if lib is A else th(np.ones(3))
            y = f(x); y.backward()
            try: y.backward(); outcomes.append('ok')
            except RuntimeError: outcomes.append('error')
        assert outcomes[0] == outcomes[1], outcomes


def test_advanced_indexing_gather_mask_and_setitem_like_torch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3))
    cases = [lambda t, T: t[[0, 2, 2, 3], 1:], lambda t, T: t[(T.tensor([0, 1, 1]) if T else A.Tensor([0, 1, 1])), -1],
             lambda t, T: t[(T.tensor(x > 0) if T else x > 0)], lambda t, T: t[:, [2, 2, 0]]]
    for k, f in enumerate(cases):
        xa, xt = t64(x), th(x)
        ya, yt = f(xa, None), f(xt, torch)
        assert_close(ya, yt, what=f"case {k}")
        g = rng.standard_normal(yt.shape)
        ya.backward(A.Tensor(g)); yt.backward(torch.tensor(g))
        assert_close(xa.grad, xt.grad, what=f"case {k} grad")
    xa, xt = t64(x), th(x)
    ha, ht = xa * 1, xt * 1
    va, vt = t64([7., 8.]), th([7., 8.])
    ha[[0, 3], 1] = va * 2; ht[[0, 3], 1] = vt * 2
    (ha * ha).sum().backward(); (ht * ht).sum().backward()
    assert_close(xa.grad, xt.grad); assert_close(va.grad, vt.grad)


def test_saved_bytes_api():
    gc.collect()
    A.reset_peak_saved_bytes()
    before = A.saved_bytes()
    x = t64(np.ones((10, 10)))
    y = (x * 2).exp()                           # Exp saves its (10, 10) float64 output; x is a leaf, not counted
    assert A.saved_bytes() - before == 800 and A.peak_saved_bytes() >= before + 800
    y.sum().backward()
    assert A.saved_bytes() == before


def test_retain_grad_on_non_leaf():
    x = t64([1., 2.])
    h = x * 3; h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad.numpy(), [6., 12.])


# ------------------------------------------------------------------ version counters, anomaly mode
def test_inplace_change_of_saved_output_is_caught_naming_the_op():
    x = t64([1., 2.])
    y = x.exp()               # Exp saves its output y
    z = (y * 2).sum()
    y.add_(1)                 # y is non-leaf: allowed now, caught at backward
    with pytest.raises(RuntimeError, match=r'Exp.*modified by an in-place operation.*version 1; expected version 0'):
        z.backward()


def test_inplace_change_of_saved_input_is_caught():
    x = t64([1., 2.])
    w = A.Tensor(np.array([3., 4.]))
    y = (x * w).sum()           # Mul saves w for x's gradient
    w[0] = 10.0                 # setitem is in place
    with pytest.raises(RuntimeError, match='Mul'):
        y.backward()
    w2 = A.Tensor(np.array([3., 4.]))
    y2 = (x * w2).sum()
    w2.reshape(2, 1).mul_(2)    # through a view: the view shares the version counter
    with pytest.raises(RuntimeError, match='Mul'):
        y2.backward()


def test_inplace_ops_record_history_like_torch():
    xa, xt = t64([0.5, 1.0]), th([0.5, 1.0])
    ha, ht = xa * 2, xt * 2
    ha.add_(1); ht.add_(1)
    ha[0] = ha[1] * 3; ht[0] = ht[1] * 3
    (ha * ha).sum().backward(); (ht * ht).sum().backward()
    assert_close(xa.grad, xt.grad)
    with pytest.raises(RuntimeError, match='leaf'):
        xa.add_(1)
    with A.no_grad(): xa.add_(1)
    np.testing.assert_array_equal(xa.detach().numpy(), [1.5, 2.0])


def test_detect_anomaly_forward_names_op_and_user_line():
    x = t64([0.0, 1.0])
    with A.detect_anomaly():
        with pytest.raises(RuntimeError) as e:
            x.log()   # log(0) = -inf
    msg = str(e.value)
    assert 'Log' in msg and 'test_autodiff.py' in msg and 'x.log()' in msg


def test_detect_anomaly_backward_names_op_and_user_line():
    x = t64([0.0, 1.0])
    with A.detect_anomaly():
        y = x.sqrt()    # finite forward, infinite gradient at 0
        with pytest.raises(RuntimeError) as e:
            y.sum().backward()
    msg = str(e.value)
    assert 'Sqrt' in msg and 'y = x.sqrt()' in msg
    z = x.sqrt().sum()          # off: no check, no error (torch gives inf too)
    z.backward()
    assert math.isinf(x.grad.numpy()[0])


# ------------------------------------------------------------------ gradcheck
def test_gradcheck_passes_and_catches_a_wrong_rule():
    rng = np.random.default_rng(5)
    a, b = t64(rng.standard_normal((3, 2))), t64(rng.standard_normal((2, 4)))
    assert A.gradcheck(lambda p, q: (p @ q).tanh().logsumexp(1), (a, b), check_forward=True)

    class BadExp(A.Exp):
        def backward(self, g): return g * self.output * 1.01
    with pytest.raises(A.GradcheckError, match='analytical'):
        A.gradcheck(lambda p: BadExp.apply(p), (a,))
    assert A.gradcheck(lambda p: BadExp.apply(p), (a,), raise_exception=False) is False
    assert torch.autograd.gradcheck(lambda p: p.exp(), (th(rng.standard_normal(3)),))  # the oracle agrees on exp


# ------------------------------------------------------------------ forward mode
def test_jvp_vjp_jacobian_hvp_against_torch_func():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((4, 3))
    def f_ours(x): return (A.Tensor(W) @ x).tanh() * x.sum()
    def f_torch(x): return (torch.tensor(W) @ x).tanh() * x.sum()
    x, v, u = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(4)
    oa, ta = A.jvp(f_ours, (A.Tensor(x),), (A.Tensor(v),))
    ot, tt = torch.func.jvp(f_torch, (torch.tensor(x),), (torch.tensor(v),))
    assert_close(oa, ot); assert_close(ta, tt)
    oa, fn = A.vjp(f_ours, A.Tensor(x)); ot, fnt = torch.func.vjp(f_torch, torch.tensor(x))
    assert_close(fn(A.Tensor(u))[0], fnt(torch.tensor(u))[0])
    jt = torch.func.jacrev(f_torch)(torch.tensor(x))
    for mode in ('fwd', 'rev'): assert_close(A.jacobian(f_ours, A.Tensor(x), mode=mode), jt)
    g_ours = lambda x: (x.tanh() ** 3).sum() + (x * x).sum().log()
    g_torch = lambda x: (x.tanh() ** 3).sum() + (x * x).sum().log()
    ya, hva = A.hvp(g_ours, A.Tensor(x), A.Tensor(v))
    yt, hvt = torch.autograd.functional.hvp(g_torch, torch.tensor(x), torch.tensor(v))
    assert_close(ya, yt); assert_close(hva, hvt)
    with pytest.raises(ValueError, match="'sideways'"): A.jacobian(f_ours, A.Tensor(x), mode='sideways')


# ------------------------------------------------------------------ checkpointing
def _mlp(n_layers, width=32, seed=0):
    rng = np.random.default_rng(seed)
    Ws = [A.Tensor(rng.standard_normal((width, width)) / math.sqrt(width), requires_grad=True) for _ in range(n_layers)]
    return Ws, [(lambda x, W=W: (x @ W).tanh()) for W in Ws]


def test_checkpoint_sequential_sqrt_n_memory_and_identical_gradients():
    gc.collect()   # graphs of earlier tests caught in reference cycles (exception tracebacks) must not be freed mid-block
    N = 64
    Ws, layers = _mlp(N)
    x = A.Tensor(np.random.default_rng(1).standard_normal((16, 32)))
    with A.saved_activation_bytes() as plain:
        loss = A.checkpoint_sequential(layers, 1, x).sum()      # one segment: no checkpointing
    loss.backward()
    g_plain = [W.grad.numpy() for W in Ws]
    for W in Ws: W.grad = None
    with A.saved_activation_bytes() as ck:
        loss = A.checkpoint_sequential(layers, int(math.sqrt(N)), x).sum()
        loss.backward()
    assert plain.peak > 0 and ck.peak <= plain.peak / 3, (plain.peak, ck.peak)
    assert ck.current == 0 and plain.current == 0        # everything saved was freed by backward
    for a, b in zip(g_plain, Ws): np.testing.assert_array_equal(a, b.grad.numpy())


def test_checkpoint_gradients_equal_torch_and_second_order():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 3))
    xa, wa, xt, wt = t64(rng.standard_normal((2, 3))), t64(w), th(rng.standard_normal((2, 3))), th(w)
    xt = th(xa.detach().numpy())
    fa = lambda x, W: (x @ W).sigmoid() * x
    ft = lambda x, W: (x @ W).sigmoid() * x
    ya = A.checkpoint(fa, xa, wa); yt = torch.utils.checkpoint.checkpoint(ft, xt, wt, use_reentrant=False)
    assert_close(ya, yt)
    ga = A.grad(ya.sum(), [xa, wa], create_graph=True); gt = torch.autograd.grad(yt.sum(), [xt, wt], create_graph=True)
    for p, q in zip(ga, gt): assert_close(p, q)
    h_a = A.grad(ga[0].sum(), wa); h_t = torch.autograd.grad(gt[0].sum(), wt)
    assert_close(h_a[0], h_t[0])


# ------------------------------------------------------------------ errors
def test_shape_mismatch_names_both_shapes():
    a, b = A.Tensor(np.ones((2, 3))), A.Tensor(np.ones((4, 5)))
    with pytest.raises(RuntimeError, match=r'\(2, 3\).*\(4, 5\)'): a + b
    with pytest.raises(ValueError, match=r'\(2, 3\).*\(4, 5\)'): a * b            # also a ValueError, like numpy
    with pytest.raises(RuntimeError, match=r'\(2, 3\).*\(4, 5\)'): a @ b
    with pytest.raises(RuntimeError, match=r'\(2, 3\).*\(7,\)'): a.reshape(7)
    with pytest.raises(RuntimeError, match=r'\(2, 3\).*\(2, 4\)'): A.cat([a, A.Tensor(np.ones((2, 4)))], 0)


def test_unsupported_dtype_and_device_are_named():
    with pytest.raises(TypeError, match='float16'): A.Tensor([1.0], dtype='float16')
    with pytest.raises(TypeError, match='float16'): A.Tensor(np.ones(2, dtype=np.float16))
    with pytest.raises(RuntimeError, match='tpu'): A.Tensor([1.0], device='tpu')
    with pytest.raises(RuntimeError, match='int64'): A.Tensor([1, 2], requires_grad=True)
    with pytest.raises(IndexError, match='out of bounds'): A.Tensor([1., 2.])[[0, 2]]
    with pytest.raises(IndexError, match='out of bounds'): A.Tensor([1., 2.])[5]


def test_mixed_float_dtypes_promote_and_gradients_keep_each_dtype():
    a = A.Tensor([1., 2.], dtype='float32', requires_grad=True)
    b = A.Tensor([3., 4.], dtype='float64', requires_grad=True)
    y = a * b
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


# ------------------------------------------------------------------ the C++ and CUDA backends, where built
def _has(device):
    try: nd.get_device(device); return True
    except Exception: return False


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.cuda)])
@pytest.mark.parametrize('seed', SEEDS[:15])
def test_random_graph_on_compiled_backends(seed, device):
    "The same random programs with every NDArray on the C++ ('cpu') or CUDA backend: gradients equal torch's."
    if not _has(device): pytest.skip(f"the {device!r} NDArray backend is not available")
    leaves, steps, _ = make_program(seed)
    prev = nd.set_default_device(device)
    try:
        ra, va = run_program(Lib('A'), leaves, steps)
        assert all(v.device == device for v in va)
        la = loss_of(Lib('A'), va, seed); la.backward()
    finally: nd.set_default_device(prev)
    rt, vt = run_program(Lib('T'), leaves, steps)
    lt = loss_of(Lib('T'), vt, seed); lt.backward()
    for a, t in zip(ra, rt):
        if t.grad is not None: assert_close(a.grad, t.grad)


# ------------------------------------------------------------------ infinities through relu and logsumexp
@pytest.mark.parametrize('device', ['numpy', 'cpu'])
def test_relu_and_logsumexp_with_infinities(device):
    "relu(-inf) = 0 and relu(nan) = nan; logsumexp over rows that are all -inf or hold +inf: torch's values and gradients."
    v = np.array([[-np.inf, -np.inf, -np.inf], [0.5, np.inf, -1.0], [np.nan, 1.0, 2.0], [-np.inf, 3.0, -2.0]])
    x, xt = A.Tensor(v, requires_grad=True, device=device), torch.tensor(v, requires_grad=True)
    np.testing.assert_array_equal(x.relu().numpy(), torch.relu(xt).detach().numpy())
    y, yt = x.logsumexp(1), torch.logsumexp(xt, 1)
    np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
    finite = [3]                                    # the rows whose gradient torch defines without NaN
    y[finite[0]].backward(); yt[finite[0]].backward()
    assert_close(x.grad, xt.grad, what='logsumexp grad')
