#!/usr/bin/env python3
"""Generate README.md from nbs/index.ipynb without Quarto.

    python tools/readme.py           # (re)write README.md
    python tools/readme.py --check   # exit 1 if README.md is out of date

Markdown cells are copied as they are; code cells become ```python fences with the
`#|` directive lines removed; cells with `#| hide`, `#| include: false` are skipped;
`#| echo: false` shows only the output. Plain-text and stream outputs become plain
fences; images and HTML outputs are left out (no base64 in the README). Relative links
are rewritten so they work from the repository root (the notebook lives in nbs/).
"""
import argparse, json, os, re, sys
from pathlib import Path

from nbtools import directives, hidden, src

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / 'nbs' / 'index.ipynb'
README = ROOT / 'README.md'
HEADER = '<!-- Generated from nbs/index.ipynb by tools/readme.py; do not edit: edit the notebook and run `make readme`. -->\n\n'
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


def fence(text, lang=''):
    longest = max((len(m) for m in re.findall(r'`+', text)), default=0)
    f = '`' * max(3, longest + 1)
    return f'{f}{lang}\n{text.rstrip()}\n{f}\n'


def _relink(url, prefix='nbs/'):
    if not url or re.match(r'^([a-zA-Z][a-zA-Z0-9+.-]*:|#|/|mailto:)', url): return url
    return prefix + url


def fix_links(md):
    "Make relative links (written relative to nbs/) work from the repository root."
    md = re.sub(r'(\]\()([^)\s]+)', lambda m: m.group(1) + _relink(m.group(2)), md)
    md = re.sub(r'(\b(?:href|src)=")([^"]+)', lambda m: m.group(1) + _relink(m.group(2)), md)
    return md


def outputs_md(cell):
    parts = []
    for o in cell.get('outputs', []):
        kind = o.get('output_type')
        if kind == 'stream':
            t = o.get('text', ''); t = ''.join(t) if isinstance(t, list) else t
            if t.strip(): parts.append(fence(ANSI.sub('', t)))
        elif kind in ('execute_result', 'display_data'):
            data = o.get('data', {})
            if 'text/markdown' in data:
                t = data['text/markdown']; parts.append((''.join(t) if isinstance(t, list) else t).strip() + '\n')
            elif any(k.startswith('image/') for k in data) or 'text/html' in data: continue  # no pictures/HTML in the README
            elif 'text/plain' in data:
                t = data['text/plain']; parts.append(fence(''.join(t) if isinstance(t, list) else t))
        elif kind == 'error':
            parts.append(fence(ANSI.sub('', '\n'.join(o.get('traceback') or [f"{o.get('ename')}: {o.get('evalue')}"]))))
    return parts


def convert(nb):
    out = []
    for cell in nb.get('cells', []):
        kind, s = cell.get('cell_type'), src(cell)
        if kind == 'markdown':
            if s.strip(): out.append(fix_links(s.strip('\n')) + '\n')
        elif kind == 'code':
            d = directives(s)
            if hidden(d): continue  # the same cells as the site leaves out
            code = d.code.strip('\n')
            if d.opts.get('echo') != 'false' and code.strip(): out.append(fence(code, 'python'))
            if d.opts.get('output') != 'false': out += outputs_md(cell)
        # raw cells (front matter) are skipped
    return HEADER + '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--check', action='store_true', help='exit 1 if README.md is out of date')
    p.add_argument('--nb', default=str(NB)); p.add_argument('--out', default=str(README))
    a = p.parse_args(argv)
    text = convert(json.loads(Path(a.nb).read_text(encoding='utf-8')))
    out = Path(a.out)
    if a.check:
        if not out.exists() or out.read_text(encoding='utf-8') != text:
            print('README.md is out of date; run `make readme`', file=sys.stderr)
            return 1
        print('README.md is up to date')
        return 0
    tmp = out.with_name(out.name + '.tmp')
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, out)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
