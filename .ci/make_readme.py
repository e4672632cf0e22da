#!/usr/bin/env python3
"""Build README.md from index.ipynb (quarto, which nbdev_readme needs, cannot be installed here).

    python .ci/make_readme.py            # write README.md (and nbs/images/index_*.png) from index.ipynb as saved
    python .ci/make_readme.py --run      # first execute index.ipynb, save its outputs, then write README.md
    python .ci/make_readme.py --check    # exit 1 when README.md or its images are not what index.ipynb gives

Markdown cells are copied; code cells become fenced Python followed by their saved text output; PNG outputs are
written to nbs/images/ and linked. Cells marked `#| hide` are left out, and `#| ...` directives are dropped.
"""
import base64, json, re, sys, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB, README, IMG = ROOT/'index.ipynb', ROOT/'README.md', ROOT/'nbs'/'images'
HEADER = '<!-- Generated from index.ipynb by .ci/make_readme.py: edit the notebook, not this file. -->\n\n'

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
def _txt(x): return ''.join(x) if isinstance(x, list) else x

def render(nb) -> tuple[str, dict]:
    "README text and {image name: bytes} from a notebook dict."
    parts, images = [], {}
    for cell in nb['cells']:
        src = _src(cell)
        if cell['cell_type'] == 'markdown': parts.append(src.strip()); continue
        if cell['cell_type'] != 'code': continue
        lines = src.splitlines()
        directives = [l for l in lines if re.match(r'^\s*#\|', l)]
        if any(re.match(r'^\s*#\|\s*(hide|exporti?|default_exp)\b', l) for l in directives): continue
        code = '\n'.join(l for l in lines if l not in directives).strip()
        echo = not any(re.match(r'^\s*#\|\s*echo:\s*false', l) for l in directives)
        if code and echo: parts.append(f'```python\n{code}\n```')
        for out in cell.get('outputs', []):
            if out.get('output_type') == 'stream' and out.get('name') == 'stdout':
                parts.append('```\n' + _txt(out['text']).rstrip() + '\n```')
            elif out.get('output_type') in ('execute_result', 'display_data'):
                data = out.get('data', {})
                if 'image/png' in data:
                    name = f'index_{len(images)}.png'
                    images[name] = base64.b64decode(_txt(data['image/png']))
                    parts.append(f'![](nbs/images/{name})')
                elif 'text/markdown' in data: parts.append(_txt(data['text/markdown']).strip())
                elif 'text/plain' in data: parts.append('```\n' + _txt(data['text/plain']).rstrip() + '\n```')
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n', images

def run_notebook():
    "Execute index.ipynb in place (outputs saved), then nbdev_clean it."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    import os
    nb = read_nb(NB)
    os.chdir(ROOT)
    sh = CaptureShell(mpl_format='png')
    sh.run_all(nb, exc_stop=True)
    write_nb(nb, NB)
    subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(NB)], check=True, capture_output=True)

def main(argv):
    if '--run' in argv: run_notebook()
    text, images = render(json.loads(NB.read_text()))
    if '--check' in argv:
        stale = []
        if not README.exists() or README.read_text() != text: stale.append('README.md')
        stale += [f'nbs/images/{n}' for n, b in images.items() if not (IMG/n).exists() or (IMG/n).read_bytes() != b]
        if stale:
            print(f"Stale: {', '.join(stale)} do not match index.ipynb; run `python .ci/make_readme.py` and commit.")
            return 1
        print('README.md matches index.ipynb.')
        return 0
    if images: IMG.mkdir(parents=True, exist_ok=True)
    for old in IMG.glob('index_*.png') if IMG.exists() else []:
        if old.name not in images: old.unlink()
    for n, b in images.items(): (IMG/n).write_bytes(b)
    README.write_text(text)
    print(f'Wrote README.md ({len(text)} characters, {len(images)} image(s)).')
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
