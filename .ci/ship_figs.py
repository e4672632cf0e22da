"""The figures of the shipped model on library/results (nbs/images/ship3_*.png), from a training run and its evaluations.

    python .ci/ship_figs.py --run RUN --evals EVAL [EVAL ...] [--shipped STEP] [--marks STEP:TEXT ...]
                            [--before EVAL ...] [--before-label TEXT]

EVAL is the --out folder of one `attngan evaluate` of the run (metrics.json, stages.png). The one at step --shipped
(default: the last in step order) gives the stage figure and the step of the sample grid; the loss curves run to the
last evaluated step, whatever the run has trained since. --marks draws a vertical line at each STEP of the progress
curves (the shipped step, a change of rate), labelled TEXT. --before adds the last stage of an earlier model's
evaluations to the progress curves (grey, dashed) for comparison. Writes nbs/images/ship3_{progress,stages,losses,samples}.png.
"""
import argparse, json, tempfile
from pathlib import Path
import matplotlib; matplotlib.use('Agg')
from PIL import Image
from attngan.evaluation import plot_progress, PROGRESS_PANELS, SHIPPED_TARGETS
from attngan.train import plot_losses
from attngan.files import save_figure

TARGETS = {k: SHIPPED_TARGETS[k] for k in ('attribute_accuracy', 'pointing_game', 'fid_evaluator', 'precision', 'recall')}

def read(folders) -> list:
    "(folder, metrics) of each evaluation, in step order."
    return sorted(((Path(f), json.loads((Path(f)/'metrics.json').read_text())) for f in folders), key=lambda r: r[1]['setup']['steps'])

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', required=True); ap.add_argument('--evals', nargs='+', required=True)
    ap.add_argument('--shipped', type=int, default=None); ap.add_argument('--marks', nargs='*', default=[])
    ap.add_argument('--before', nargs='*', default=[]); ap.add_argument('--before-label', default='model shipped before')
    ap.add_argument('--images', default=str(Path(__file__).parents[1]/'nbs'/'images'))
    a = ap.parse_args()
    run, im_dir, evals = Path(a.run).expanduser(), Path(a.images), read(a.evals)
    ms = [m for _, m in evals]
    fig = plot_progress(ms, targets=TARGETS)
    if a.before:
        before = [m for _, m in read(a.before)]
        keys = [k for k in PROGRESS_PANELS if k in ms[-1]]
        for ax, k in zip(fig.axes, keys):
            pts = [(m['setup']['steps'], m[k]['generated']) for m in before if k in m]
            if pts: ax.plot(*zip(*pts), 'x--', ms=3, lw=1, color='0.45', label=a.before_label)
        fig.axes[0].legend(fontsize=5)
    for i, mark in enumerate(a.marks):
        at, text = mark.split(':', 1)
        for ax in fig.axes[:len([k for k in PROGRESS_PANELS if k in ms[-1]])]:
            ax.axvline(int(at), color=f'C{3 + i}', ls=':', lw=1, label=text)
    handles, labels = fig.axes[0].get_legend_handles_labels()                # one legend for all panels, below them
    fig.axes[0].get_legend().remove()
    fig.legend(handles, labels, loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=6, frameon=False)
    fig.savefig(im_dir/'ship3_progress.png', dpi=80, bbox_inches='tight')
    steps = [m['setup']['steps'] for m in ms]
    shown = steps.index(a.shipped) if a.shipped is not None else len(evals) - 1     # ValueError: no evaluation at that step
    shipped, step = evals[shown][0], steps[shown]
    history = [h for h in json.loads((run/'losses.json').read_text()) if h['step'] <= steps[-1]]
    with tempfile.TemporaryDirectory() as tmp:
        save_figure(plot_losses(history), Path(tmp)/'losses.png')
        for src, dst, w in ((shipped/'stages.png', 'ship3_stages.png', 900), (Path(tmp)/'losses.png', 'ship3_losses.png', 700),
                            (run/'samples'/f'step_{step:06d}.png', 'ship3_samples.png', 720)):
            img = Image.open(src); img.thumbnail((w, w)); img.save(im_dir/dst, optimize=True)
    for f in ('progress', 'stages', 'losses', 'samples'): print(f'ship3_{f}.png', (im_dir/f'ship3_{f}.png').stat().st_size // 1024, 'KiB')

if __name__ == '__main__': main()
