#!/usr/bin/env python3
"""Fail if `nbdev_export` changes anything under tinygrad_book/: the exported modules must match the notebooks.

Compares checksums of every file of the package (caches and build products left out) before and
after running `nbdev_export`, and lists the files added, removed or changed. Does not rely on git.
"""
import hashlib, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / 'tinygrad_book'
SKIP_SUFFIXES = {'.pyc', '.so', '.o', '.pyd'}


def snapshot():
    return {p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(LIB.rglob('*')) if p.is_file() and '__pycache__' not in p.parts
            and p.suffix not in SKIP_SUFFIXES and not p.name.endswith('.egg-info')}


def main():
    before = snapshot()
    exe = Path(sys.executable).with_name('nbdev_export')
    r = subprocess.run([str(exe) if exe.exists() else (shutil.which('nbdev_export') or 'nbdev_export')], cwd=ROOT)
    if r.returncode: sys.exit(f'check_export: nbdev_export failed with exit code {r.returncode}')
    after = snapshot()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(f for f in set(before) & set(after) if before[f] != after[f])
    if added or removed or changed:
        print('nbdev_export changed the package: the notebooks and tinygrad_book/ were out of sync.', file=sys.stderr)
        for kind, files in (('added', added), ('removed', removed), ('changed', changed)):
            for f in files: print(f'  {kind}: {f}', file=sys.stderr)
        print('The exported files are now in the work tree: review and commit them (`git diff tinygrad_book/`).', file=sys.stderr)
        return 1
    print(f'nbdev_export: tinygrad_book/ is in sync with the notebooks ({len(after)} files)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
