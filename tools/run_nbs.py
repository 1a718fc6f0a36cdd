#!/usr/bin/env python3
"""Execute the book's notebooks in place, saving their outputs (the book shows them).

    python tools/run_nbs.py                 # every nbs/*.ipynb whose code or library changed
    python tools/run_nbs.py nbs/04_softmax.ipynb
    python tools/run_nbs.py --force         # rerun all

Unlike `nbdev_test`, every cell runs, `#| slow` and `#| notest` ones included. Skipped:
cells flagged `#| cuda` when `torch.cuda.is_available()` is False (they keep the outputs
they have), cells with `#| eval: false`, and cells that call `nbdev_export()`.
Each notebook runs in its own process, with cwd = nbs/, IN_TEST unset and
TINYGRAD_BOOK_EXEC=1 set. After a successful run the notebook is written back and
cleaned as `nbdev_clean` would; on an exception the notebook is left untouched, the
failing cell and its traceback are printed and the exit status is 1.

Incremental: a hash of the notebook's code cells, of every file under tinygrad_book/
(the *.py modules and csrc/), and of whether CUDA is available is stored in
.cache/exec/<notebook>.hash after a successful run; a notebook whose hash is unchanged is skipped.
"""
import argparse, hashlib, json, os, subprocess, sys, time
from pathlib import Path

from nbtools import directives, src

ROOT = Path(__file__).resolve().parent.parent
NBS, LIB = ROOT / 'nbs', ROOT / 'tinygrad_book'
STAMPS = ROOT / '.cache' / 'exec'
VERSION = '1'  # bump to invalidate every stored hash


def lib_files():
    return sorted(p for p in LIB.rglob('*') if p.is_file() and '__pycache__' not in p.parts
                  and (p.suffix == '.py' or 'csrc' in p.relative_to(LIB).parts))


def cuda_available():
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def nb_hash(nb_path, lib_digest, cuda):
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    h = hashlib.sha256(f'v{VERSION} cuda={cuda} lib={lib_digest}\n'.encode())
    for c in nb.get('cells', []):
        if c.get('cell_type') == 'code': h.update(b'\0cell\0' + src(c).encode())
    return h.hexdigest()


def lib_hash():
    h = hashlib.sha256()
    for p in lib_files():
        h.update(str(p.relative_to(LIB)).encode() + b'\0' + p.read_bytes() + b'\0')
    return h.hexdigest()


def stamp_path(nb_path): return STAMPS / (Path(nb_path).stem + '.hash')


# ---------------------------------------------------------------- the child: run one notebook
def run_one(nb_path):
    nb_path = Path(nb_path).resolve()
    from execnb.nbio import read_nb, write_nb, nb2dict
    from execnb.shell import CaptureShell
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    os.chdir(nb_path.parent)
    sys.path.insert(0, str(ROOT))
    cuda = cuda_available()
    nb = read_nb(nb_path)
    shell = CaptureShell(nb_path)
    shell._fname = nb_path
    state = {}

    def preproc(cell):  # True means skip
        if cell.cell_type != 'code': return True
        # the `#|` lines at the top, blank lines among them skipped: flags such as {'cuda'}, options such as {'eval': 'false'}
        flags, opts, _, _ = directives(cell.source)
        skip = None
        if 'cuda' in flags and not cuda: skip = 'cuda (no GPU)'
        elif opts.get('eval') == 'false': skip = 'eval: false'
        elif 'nbdev_export(' in cell.source: skip = 'nbdev_export'
        if skip:
            print(f'  cell {cell.idx_ + 1}: skipped ({skip})', flush=True)
            return True
        cell.outputs = []
        if 'execution_count' in cell: cell.execution_count = None
        state['t'], state['cell'] = time.time(), cell
        return False

    def postproc(cell):
        dt = time.time() - state['t']
        if dt > 5: print(f'  cell {cell.idx_ + 1}: {dt:.0f}s', flush=True)

    try:
        shell.run_all(nb, exc_stop=True, preproc=preproc, postproc=postproc)
    except BaseException:
        cell = state.get('cell')
        bar = '=' * 75
        if cell is not None:
            sys.stderr.write(f'\n{bar}\nFAILED: {nb_path.name}, cell {cell.idx_ + 1}:\n{bar}\n{cell.source}\n{bar}\n')
        if shell.exc is not None: sys.stderr.write(shell.prettytb(fname=nb_path) + '\n')
        else:
            import traceback; traceback.print_exc()
        return 1
    d = nb2dict(nb)
    cfg = get_config(path=ROOT)
    clean_nb(d, clear_all=False, allowed_metadata_keys=cfg.get('allowed_metadata_keys', '').split(),
             allowed_cell_metadata_keys=cfg.get('allowed_cell_metadata_keys', '').split(), clean_ids=cfg.clean_ids)
    write_nb(d, nb_path)
    return 0


# ---------------------------------------------------------------- the parent
def main(argv=None):
    p = argparse.ArgumentParser(description='Execute the book notebooks in place, incrementally.')
    p.add_argument('notebooks', nargs='*', help='notebooks to run (default: every nbs/*.ipynb)')
    p.add_argument('--force', action='store_true', help='rerun even when the code and library are unchanged')
    p.add_argument('--child', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child: return run_one(a.child)

    nbs = [Path(n).resolve() for n in a.notebooks] or sorted(
        n for n in NBS.glob('*.ipynb') if not n.name.startswith(('_', '.')))
    if not nbs:
        print('run_nbs: no notebooks'); return 0
    cuda, lib = cuda_available(), lib_hash()
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    env['TINYGRAD_BOOK_EXEC'] = '1'
    env.setdefault('TORCH_EXTENSIONS_DIR', str(ROOT / '.cache' / 'torch_extensions'))
    STAMPS.mkdir(parents=True, exist_ok=True)
    ran = skipped = 0
    t_all = time.time()
    for nb in nbs:
        h = nb_hash(nb, lib, cuda)
        st = stamp_path(nb)
        if not a.force and st.exists() and st.read_text().strip() == h:
            print(f'= {nb.name}: unchanged, not rerun'); skipped += 1; continue
        print(f'> {nb.name} ...', flush=True)
        t = time.time()
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), '--child', str(nb)], env=env, cwd=nb.parent)
        if r.returncode:
            st.unlink(missing_ok=True)
            print(f'! {nb.name}: FAILED after {time.time() - t:.1f}s', file=sys.stderr)
            return 1
        st.write_text(nb_hash(nb, lib, cuda) + '\n')
        print(f'  {nb.name}: ok in {time.time() - t:.1f}s', flush=True)
        ran += 1
    print(f'run_nbs: {ran} run, {skipped} unchanged, {time.time() - t_all:.1f}s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
