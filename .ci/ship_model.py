"""Write attngan/assets from a trained run: the shipped model, the evaluator and the evaluation DAMSM.

    python .ci/ship_model.py RUN [--info train_info.json] [--metrics RUN/metrics.json] [--legs legs.json]
    python .ci/ship_model.py --eval-only [--metrics metrics.json]     # refresh the evaluators (and the model's metrics.json)

RUN is the --out folder of `attngan train`; its legs.json (one record per `attngan train` call) goes into
train_info.json unless --legs names another. The evaluator and the evaluation DAMSM of the default synthetic-birds
set are copied from the user cache ($ATTNGAN_CACHE, default ~/.cache/attngan), where `attngan evaluate` left them.
Weights are stored in half precision; every folder gets a SHA256SUMS file that the loaders verify.
"""
import argparse, json, shutil
from pathlib import Path
from attngan.sample import package_model, assets_dir, write_checksums, half_precision, SHIPPED_MODEL
from attngan.pretrain import _load_tensors, atomic_torch_save
from attngan.evaluator import metrics_cache_dir

def half_copy(src: Path, dst: Path, weights: tuple, others: tuple):
    "Copy `others` as they are and `weights` (tensors-only checkpoints) in half precision."
    dst.mkdir(parents=True, exist_ok=True)
    for f in weights: atomic_torch_save(half_precision(_load_tensors(src/f)), dst/f)
    for f in others: shutil.copyfile(src/f, dst/f)
    write_checksums(dst)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('run', nargs='?'); ap.add_argument('--info', default=None); ap.add_argument('--metrics', default=None)
    ap.add_argument('--legs', default=None, help='a JSON list of training legs (command, started, steps [from, to], wall_minutes) for train_info.json (default: RUN/legs.json)')
    ap.add_argument('--eval-only', action='store_true', help='keep the shipped model; copy the evaluators (and --metrics) only')
    a = ap.parse_args()
    if not a.eval_only and not a.run: ap.error('give RUN, or --eval-only')
    assets = assets_dir()
    info = json.loads(Path(a.info).read_text()) if a.info else None
    if a.legs: legs_file = Path(a.legs)                                       # given: must be readable
    elif a.run and not a.eval_only and (Path(a.run)/'legs.json').is_file(): legs_file = Path(a.run)/'legs.json'
    else: legs_file = None                                                    # a run from before legs.json
    if legs_file is not None:
        legs = json.loads(legs_file.read_text())
        info = (info or {}) | dict(legs=legs, gan_steps=legs[-1]['steps'][1], gan_wall_minutes=round(sum(l['wall_minutes'] for l in legs), 1))
    out = assets/SHIPPED_MODEL if a.eval_only else package_model(a.run, assets/SHIPPED_MODEL, half=True, info=info)
    if a.metrics: shutil.copyfile(a.metrics, out/'metrics.json'); write_checksums(out)
    cache = metrics_cache_dir()
    for ev in sorted((cache/'evaluators').glob('n11788_s128_seed0_*')):
        half_copy(ev, assets/'evaluators'/ev.name, ('evaluator.pt',), ('evaluator.json',))
    for dm in sorted((cache/'eval_damsm').glob('n11788_s128_seed0_*')):
        half_copy(dm, assets/'eval_damsm'/dm.name, ('damsm.pt',), tuple(f for f in ('config.json', 'vocab.json', 'damsm_eval.json') if (dm/f).is_file()))
    total = sum(p.stat().st_size for p in assets.rglob('*') if p.is_file())
    for p in sorted(assets.rglob('*')):
        if p.is_file(): print(f"{p.stat().st_size / 2**20:7.2f} MiB  {p.relative_to(assets)}")
    print(f"{total / 2**20:7.2f} MiB  in all")

if __name__ == '__main__': main()
