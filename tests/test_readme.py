"README.md is generated from nbs/index.ipynb by tools/readme.py, without Quarto."
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import readme  # noqa: E402


def cell(kind, s, outputs=()):
    return dict(cell_type=kind, metadata={}, source=s, **(dict(outputs=list(outputs)) if kind == 'code' else {}))


def test_convert_hides_directives_and_images():
    png = dict(output_type='display_data', data={'image/png': 'iVBORw0KGgo' * 100, 'text/plain': ['<Figure>']}, metadata={})
    out = readme.convert(dict(cells=[
        cell('markdown', '# T\nSee [ch](04_softmax.ipynb) and [web](https://x.org).'),
        cell('code', '#| hide\nsecret()'), cell('code', '#| include: false\nhidden()'),
        cell('code', '#| export\nf(1)', [dict(output_type='execute_result', data={'text/plain': ['2']}, metadata={})]),
        cell('code', '#| echo: false\nshown_output()', [dict(output_type='stream', name='stdout', text=['hello\n'])]),
        cell('code', 'plot()', [png])]))
    assert out.startswith(readme.HEADER)
    assert '[ch](nbs/04_softmax.ipynb)' in out and '[web](https://x.org)' in out
    assert 'secret' not in out and 'hidden' not in out and '#|' not in out and 'shown_output' not in out
    assert '```python\nf(1)\n```' in out and '```\n2\n```' in out and '```\nhello\n```' in out
    assert 'iVBOR' not in out and '```python\nplot()\n```' in out


def test_readme_is_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
