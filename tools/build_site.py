#!/usr/bin/env python3
"""Render the book's website from the notebooks in nbs/, offline, without running any code.

    python tools/build_site.py [--out _site] [--proc _proc] [--engine auto|quarto|smalldocs]

1. Copies nbs/ into a processing folder (default _proc/), turning nbdev directives into
   what Quarto understands:
     - cells flagged `#| hide`, `#| exporti` or `#| include: false`, `#| default_exp` cells and
       nbdev plumbing (`import nbdev`, `nbdev_export()`) are dropped;
     - `#| export` / `#| exports` and test flags (`#| slow`, `#| cuda`, `#| notest`, ...) lines
       are removed, the code stays visible; Quarto options (`#| echo: false`, `#| fig-cap: ...`) stay;
     - a first markdown cell `# Title` (optionally followed by `> description`) becomes the
       page's front matter, as nbdev does.
   The top-level _quarto.yml is copied beside them, without sidebar entries whose notebook is missing.
2. Renders that folder with `quarto render` when quarto is on PATH, else with `smalldocs render`.
3. Moves the site to --out (default _site/) and prints the absolute path of its index page.
"""
import argparse, copy, json, os, re, shutil, subprocess, sys
from pathlib import Path

import yaml

from nbtools import directives, hidden, src

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'


def proc_code(cell):
    "The cell for the site, or None to drop it."
    # Quarto option lines (key: value) are kept as written; nbdev flags are dropped
    d = directives(src(cell))
    if hidden(d): return None
    if not d.code.strip() and not cell.get('outputs'): return None
    cell = copy.deepcopy(cell)
    cell['source'] = ''.join(f'#| {o}\n' for o in d.option_lines) + d.code.strip('\n')
    return cell


def front_matter(cells):
    "nbdev's convention: `# Title` and `> description` in the first markdown cell become front matter."
    if cells and cells[0].get('cell_type') == 'raw' and src(cells[0]).lstrip().startswith('---'): return cells
    first = next((i for i, c in enumerate(cells) if c.get('cell_type') == 'markdown'), None)
    if first is None: return cells
    lines = src(cells[first]).split('\n')
    while lines and not lines[0].strip(): lines.pop(0)
    if not lines or not re.match(r'#\s+\S', lines[0]): return cells
    fm = {'title': re.sub(r'^#\s+', '', lines.pop(0)).strip()}
    while lines and not lines[0].strip(): lines.pop(0)
    if lines and lines[0].startswith('>'):
        fm['description'] = lines.pop(0).lstrip('>').strip()
    cells = list(cells)
    rest = '\n'.join(lines).strip('\n')
    if rest: cells[first] = {**cells[first], 'source': rest}
    else: del cells[first]
    raw = {'cell_type': 'raw', 'id': 'frontmatter', 'metadata': {},
           'source': '---\n' + yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000) + '---'}
    return [raw] + cells


def proc_nb(path):
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    cells = []
    for c in nb.get('cells', []):
        if c.get('cell_type') == 'code':
            c = proc_code(c)
            if c is None: continue
        cells.append(c)
    nb['cells'] = front_matter(cells)
    return nb


def config(proc):
    "The top-level _quarto.yml, less the sidebar entries whose page is not in `proc`."
    cfg = yaml.safe_load((ROOT / '_quarto.yml').read_text(encoding='utf-8'))

    def keep(entries):
        out = []
        for e in entries or []:
            href = e.get('href') or e.get('file') if isinstance(e, dict) else e
            if isinstance(e, dict) and 'contents' in e:
                e = {**e, 'contents': keep(e['contents'])}
            elif isinstance(href, str) and not re.match(r'^[a-z]+:', href) and not (proc / href.split('#')[0]).exists():
                print(f'build_site: sidebar entry {href} has no notebook yet; left out', file=sys.stderr)
                continue
            out.append(e)
        return out

    sb = cfg.get('website', {}).get('sidebar')
    for s in (sb if isinstance(sb, list) else [sb] if sb else []):
        s['contents'] = keep(s.get('contents'))
    cfg.setdefault('project', {})['output-dir'] = '_site'
    return cfg


def prepare(proc):
    if proc.exists(): shutil.rmtree(proc)
    proc.mkdir(parents=True)
    for p in sorted(NBS.rglob('*')):
        rel = p.relative_to(NBS)
        if any(part.startswith(('.', '_')) for part in rel.parts) or not p.is_file(): continue
        dest = proc / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == '.ipynb':
            dest.write_text(json.dumps(proc_nb(p), indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
        else:
            shutil.copy2(p, dest)
    (proc / '_quarto.yml').write_text(yaml.safe_dump(config(proc), sort_keys=False, allow_unicode=True), encoding='utf-8')


def render(proc, engine, quiet):
    if engine == 'auto': engine = 'quarto' if shutil.which('quarto') else 'smalldocs'
    if engine == 'quarto':
        cmd = ['quarto', 'render', str(proc)] + (['--quiet'] if quiet else [])
    else:
        exe = Path(sys.executable).with_name('smalldocs')
        cmd = ([str(exe)] if exe.exists() else [sys.executable, '-m', 'smalldocs.cli']) + ['render', str(proc)] + (['-q'] if quiet else [])
    print(f'build_site: rendering with {engine}', file=sys.stderr)
    r = subprocess.run(cmd, cwd=proc)
    if r.returncode: sys.exit(f'build_site: {engine} render failed with exit code {r.returncode}')
    return proc / '_site'


KATEX_CDN = re.compile(r'https://cdn\.jsdelivr\.net/npm/katex@[0-9.]+/dist')
KATEX_LOCAL = ROOT / 'tools' / 'site_assets' / 'katex'


def vendor_katex(site):
    "Serve KaTeX from the site itself (site_libs/katex) instead of a CDN, so maths renders offline."
    pages = [p for p in site.rglob('*.html') if KATEX_CDN.search(p.read_text(encoding='utf-8'))]
    if not pages or not KATEX_LOCAL.is_dir(): return
    shutil.copytree(KATEX_LOCAL, site / 'site_libs' / 'katex', dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('README.md'))
    for p in pages:
        rel = os.path.relpath(site / 'site_libs' / 'katex', p.parent).replace(os.sep, '/')
        p.write_text(KATEX_CDN.sub(rel, p.read_text(encoding='utf-8')), encoding='utf-8')


def main(argv=None):
    p = argparse.ArgumentParser(description='Render the book website from nbs/ into _site/.')
    p.add_argument('--out', default=str(ROOT / '_site'), help='where the site goes (default _site/)')
    p.add_argument('--proc', default=str(ROOT / '_proc'), help='the processing folder (default _proc/)')
    p.add_argument('--engine', choices=['auto', 'quarto', 'smalldocs'], default='auto')
    p.add_argument('--quiet', '-q', action='store_true')
    a = p.parse_args(argv)
    proc, out = Path(a.proc).resolve(), Path(a.out).resolve()
    prepare(proc)
    site = render(proc, a.engine, a.quiet)
    vendor_katex(site)
    if out.exists():
        if any(out.iterdir()) and not ((out / 'index.html').exists() or (out / 'site_libs').exists()):
            sys.exit(f'build_site: {out} exists and is not a built site; not replacing it')
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(site), str(out))
    index = out / 'index.html'
    if not index.exists(): sys.exit(f'build_site: no index page in {out}')
    print(index)
    return 0


if __name__ == '__main__':
    sys.exit(main())
