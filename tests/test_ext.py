"""tinygrad_book.ext: the loader's cache, rebuild-on-change, concurrency, error messages; the SiLU op vs torch."""
import os, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tinygrad_book import ext

DEVICES = ['cpu'] + ([pytest.param('cuda', marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_silu_matches_torch(dtype, device):
    x = (torch.randn(257, 33, dtype=torch.float64) * 8).to(dtype=dtype, device=device)
    x[0, :4] = torch.tensor([0.0, 1e4, -1e4, -0.0])
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yr = ext.silu(xo), F.silu(xr)
    g = torch.randn_like(yr)
    yo.backward(g), yr.backward(g)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(yo, yr, **tol)
    torch.testing.assert_close(xo.grad, xr.grad, **tol)
    xt = x.t()  # non-contiguous
    torch.testing.assert_close(ext.silu(xt), F.silu(xt), **tol)


def test_silu_gradcheck_and_fallback():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ext.silu, (x,))
    assert torch.autograd.gradgradcheck(ext.silu, (x,))
    h = torch.randn(8, dtype=torch.float16)
    torch.testing.assert_close(ext.silu(h), F.silu(h))


def test_silu_dispatches_to_compiled_kernel():
    ext.load_ops('silu')
    rows = torch._C._dispatch_dump_table('tgb_silu::silu_fwd').splitlines()
    assert any(r.startswith('CPU:') and 'silu.cpp' in r and r.endswith('[kernel]') for r in rows), rows


def test_cache_key_changes_with_source(tmp_path, monkeypatch):
    src = tmp_path / 'k.cpp'
    src.write_text('#include "k.h"\nint f() { return 1; }\n')
    k1 = ext._build_key([src], (['-O3'], []), False)
    assert k1 == ext._build_key([src], (['-O3'], []), False)
    src.write_text('#include "k.h"\nint f() { return 2; }\n')
    assert ext._build_key([src], (['-O3'], []), False) != k1
    (tmp_path / 'k.h').write_text('#include "inner.h"\n')  # an included header is part of the key...
    (tmp_path / 'inner.h').write_text('// v1\n')
    k3 = ext._build_key([src], (['-O3'], []), False)
    (tmp_path / 'inner.h').write_text('// v2\n')  # ...and so is one it includes in turn
    assert ext._build_key([src], (['-O3'], []), False) != k3
    k4 = ext._build_key([src], (['-O3'], []), False)
    (tmp_path / 'unrelated.h').write_text('// another library\'s header\n')  # a header nobody includes is not
    assert ext._build_key([src], (['-O3'], []), False) == k4
    assert ext._build_key([src], (['-O2'], []), False) != ext._build_key([src], (['-O3'], []), False)


def test_headers_of_the_book_libraries_are_in_their_keys():
    "softmax.cpp includes fast_math.h and cpu_alloc.h: both must be found (the key would miss an edit otherwise)."
    found = {p.name for p in ext._local_headers([ext.CSRC / 'softmax.cpp'])}
    assert {'fast_math.h', 'cpu_alloc.h'} <= found, found


def test_missing_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv('CXX', 'definitely-not-a-compiler-xyz')
    with pytest.raises(ext.ExtensionBuildError, match='no C\\+\\+ compiler'):
        ext.check_toolchain()


def test_missing_source_is_a_clear_error():
    with pytest.raises(ext.ExtensionBuildError, match='source file not found'):
        ext.load_ext('nope', ['does_not_exist.cpp'])


def test_cuda_sources_without_cuda_is_a_clear_error():
    if torch.cuda.is_available(): pytest.skip('CUDA present')
    with pytest.raises(ext.ExtensionBuildError, match='cuda.is_available'):
        ext.load_ext('silu_cuda', ['silu_cuda.cpp', 'silu.cu'])


def test_compile_error_is_reported_with_compiler_output(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'cache'))
    bad = tmp_path / 'bad.cpp'
    bad.write_text('#include <torch/library.h>\nint broken( { return 0; }\n')
    with pytest.raises(ext.ExtensionBuildError) as ei:
        ext.load_ext('bad', [bad])
    msg = str(ei.value)
    assert "building extension 'bad'" in msg and 'bad.cpp' in msg


def test_two_processes_build_the_same_extension_at_once(tmp_path):
    """Both processes succeed; the build happens once (the second waits on the lock, then loads the result)."""
    src = tmp_path / 'twice.cpp'
    src.write_text(textwrap.dedent('''
        #include <torch/library.h>
        #include <ATen/ATen.h>
        at::Tensor twice(const at::Tensor& x) { return x * 2; }
        TORCH_LIBRARY(tgb_twice_test, m) { m.def("twice(Tensor x) -> Tensor"); }
        TORCH_LIBRARY_IMPL(tgb_twice_test, CPU, m) { m.impl("twice", &twice); }
    '''))
    code = textwrap.dedent(f'''
        import torch, torch.utils.cpp_extension as ce
        from tinygrad_book import ext
        builds, build = [], ce.load
        ce.load = lambda *a, **k: (builds.append(1), build(*a, **k))[1]  # count real builds in this process
        ext.load_ext('twice', [{str(src)!r}])
        print(len(builds), torch.ops.tgb_twice_test.twice(torch.ones(2)).tolist())
    ''')
    env = {**os.environ, 'TORCH_EXTENSIONS_DIR': str(tmp_path / 'cache')}
    procs = [subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip().endswith('[2.0, 2.0]'), out
    assert sum(int(out.split()[0]) for out, _ in outs) == 1, outs  # one process built, the other waited and loaded
    # the process that compiled said so, in one line naming the library; the one that waited said nothing
    said = [err for _, err in outs if 'tinygrad_book: compiling twice (twice.cpp)' in err]
    assert len(said) == 1, outs
    builds = [d for d in (tmp_path / 'cache').iterdir() if d.is_dir()]
    assert len(builds) == 1, builds
    assert (builds[0] / '.complete').exists()


def test_cli_build_and_check_cuda():
    r = subprocess.run([sys.executable, '-m', 'tinygrad_book.ext', 'build', 'silu'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'silu' in r.stdout
    r = subprocess.run([sys.executable, '-m', 'tinygrad_book.ext', 'check-cuda'], capture_output=True, text=True)
    if ext._nvcc() is None:
        assert r.returncode == 1 and 'nvcc' in r.stderr
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        assert 'softmax.cu' in r.stdout and 'silu.cu' in r.stdout


def test_bench_harness_quick():
    from tinygrad_book import bench
    rows = bench.run('softmax', quick=True, warmup=1, repeats=1, progress=False)
    assert rows and all(r[2] > 0 and r[3] > 0 and abs(r[4] - r[2] / r[3]) < 1e-12 for r in rows)
    table = bench.format_table(rows)
    assert 'ours/ref' in table and 'cross_entropy fwd+bwd' in table
    with pytest.raises(KeyError, match='no benchmark named'):
        bench.cases_for('no_such_chapter')


def test_cached_build_loads_without_a_compiler(tmp_path):
    """Once built, a library loads with no compiler or ninja on the machine (only a build needs them)."""
    env = {**os.environ, 'TORCH_EXTENSIONS_DIR': os.environ.get('TORCH_EXTENSIONS_DIR', str(tmp_path))}
    code = "from tinygrad_book import ext; ext.load_ops('silu')"
    subprocess.run([sys.executable, '-c', code], env=env, check=True, capture_output=True, timeout=600)
    env.pop('CXX', None)
    env['PATH'] = str(tmp_path)  # no c++, no ninja: nothing to compile with (CXX itself is part of the cache key)
    r = subprocess.run([sys.executable, '-c', code + "; import torch; print(torch.ops.tgb_silu.silu_fwd(torch.zeros(1)))"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'tensor([0.])' in r.stdout


def test_changed_source_in_the_same_process_is_refused_not_a_crash(tmp_path):
    """Loading a second build of an op library would register its ops twice and abort Python: refuse clearly."""
    src = tmp_path / 'again.cpp'
    body = textwrap.dedent('''
        #include <torch/library.h>
        #include <ATen/ATen.h>
        at::Tensor f(const at::Tensor& x) {{ return x + {}; }}
        TORCH_LIBRARY(tgb_again_test, m) {{ m.def("f(Tensor x) -> Tensor"); }}
        TORCH_LIBRARY_IMPL(tgb_again_test, CPU, m) {{ m.impl("f", &f); }}
    ''')
    code = textwrap.dedent(f'''
        import pathlib, torch
        from tinygrad_book import ext
        src = pathlib.Path({str(src)!r})
        src.write_text({body!r}.format(1))
        ext.load_ext('again', [src])
        assert ext.load_ext('again', [src]).exists()  # unchanged: the loaded library again
        src.write_text({body!r}.format(2))
        try:
            ext.load_ext('again', [src])
        except ext.ExtensionBuildError as e:
            print('refused:', e)
        print(torch.ops.tgb_again_test.f(torch.zeros(1)).tolist())
    ''')
    env = {**os.environ, 'TORCH_EXTENSIONS_DIR': str(tmp_path / 'cache')}
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'refused:' in r.stdout and 'restart Python' in r.stdout, r.stdout
    assert r.stdout.strip().endswith('[1.0]'), r.stdout  # the first version keeps working


def _run_load(cache, code="from tinygrad_book import ext; ext.load_ops('silu')", *args, **env):
    return subprocess.run([sys.executable, *args, '-c', code] if not args else [sys.executable, *args],
                          env={**os.environ, 'TORCH_EXTENSIONS_DIR': str(cache), **env},
                          capture_output=True, text=True, timeout=600)


def test_cache_path_that_is_a_file_is_a_clear_error(tmp_path):
    """A cache path that is a file: ExtensionBuildError with the fix, from the API and from the CLI (no traceback)."""
    cache = tmp_path / 'not_a_dir'
    cache.write_text('x')
    r = _run_load(cache, "from tinygrad_book import ext\n"
                         "try: ext.load_ops('silu')\n"
                         "except ext.ExtensionBuildError as e: print('ExtensionBuildError:', e)")
    assert r.returncode == 0, r.stderr
    assert 'ExtensionBuildError:' in r.stdout and 'is a file' in r.stdout, r.stdout
    assert 'TORCH_EXTENSIONS_DIR' in r.stdout and 'TINYGRAD_BOOK_KERNELS=0' in r.stdout, r.stdout
    r = subprocess.run([sys.executable, '-m', 'tinygrad_book.ext', 'build', 'silu'], capture_output=True, text=True,
                       env={**os.environ, 'TORCH_EXTENSIONS_DIR': str(cache)}, timeout=600)
    assert r.returncode == 1
    assert r.stderr.startswith('error: the extension cache') and 'Traceback' not in r.stderr, r.stderr
    assert cache.read_text() == 'x'  # nothing was overwritten


def test_cache_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / 'f').write_text('x')
    r = _run_load(tmp_path / 'f' / 'cache', "from tinygrad_book import ext\n"
                  "try: ext.load_ops('silu')\n"
                  "except ext.ExtensionBuildError as e: print('ExtensionBuildError:', e)")
    assert 'ExtensionBuildError:' in r.stdout and 'cannot be created' in r.stdout, r.stdout + r.stderr


def _as_nobody():
    "Run a subprocess as an unprivileged user where we are root (root ignores file permissions), else as ourselves."
    import shutil
    if os.geteuid() != 0: return []
    if not shutil.which('setpriv'): pytest.skip('running as root without setpriv: cannot test permissions')
    return ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']


def test_read_only_cache_with_a_finished_build_loads(tmp_path):
    """A complete build in a cache nobody can write still loads (no lock file needed); building into it is a clear error."""
    import shutil, stat, tempfile
    ext.load_ops('silu')
    built = ext._loaded['silu'][1].parent
    root = Path(tempfile.mkdtemp(prefix='tgb_ro_'))  # outside pytest's private tmp dir, so another user can reach it
    try:
        cache = root / 'cache'
        shutil.copytree(built, cache / built.name)
        for p in [root, *root.rglob('*')]:  # read-only for everyone
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IROTH |
                    (stat.S_IXOTH if p.is_dir() else 0))
        code = ("import torch; from tinygrad_book import ext; ext.load_ops('silu'); "
                "print(torch.ops.tgb_silu.silu_fwd(torch.zeros(1)))")
        r = subprocess.run([*_as_nobody(), sys.executable, '-c', code], capture_output=True, text=True, timeout=600,
                           env={**os.environ, 'TORCH_EXTENSIONS_DIR': str(cache), 'HOME': str(root)})
        assert r.returncode == 0, r.stderr
        assert 'tensor([0.])' in r.stdout
        # a library with no finished build in that cache would have to be built there: a clear error instead
        r = subprocess.run([*_as_nobody(), sys.executable, '-c',
                            "from tinygrad_book import ext\n"
                            "try: ext.load_ext('unbuilt', ['silu.cpp'], extra_cflags=['-DTGB_UNBUILT'])\n"
                            "except ext.ExtensionBuildError as e: print('ExtensionBuildError:', e)"],
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, 'TORCH_EXTENSIONS_DIR': str(cache), 'HOME': str(root)})
        assert 'ExtensionBuildError:' in r.stdout and 'not writable' in r.stdout, r.stdout + r.stderr
    finally:
        for p in [root, *root.rglob('*')]: p.chmod(p.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(root)
