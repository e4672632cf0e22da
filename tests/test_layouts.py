"Every data layout `--data` reads trains end to end from the command line; `check-data` reports damaged folders accurately."
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from attngan.config import tiny
from attngan.layouts import CUBDataset, write_layout, detect_layout, check_data
from _cli import run                      # tests/_cli.py: `attngan ARGS` in a subprocess


@pytest.fixture(scope='module')
def layouts(birds_root, tmp_path_factory) -> dict:
    "The synthetic birds of the session copied into each layout (all their images)."
    d = tmp_path_factory.mktemp('layouts')
    return {l: write_layout(birds_root, d/l, l) for l in ('folder', 'table', 'coco')}


@pytest.mark.parametrize('layout', ['folder', 'table', 'coco'])
def test_layout_trains_end_to_end(layouts, layout, tmp_path):
    root = layouts[layout]
    assert detect_layout(root) == layout
    r = run('check-data', root, '--preset', 'tiny')
    assert r.returncode == 0 and f'{layout} layout' in r.stdout and r.stdout.rstrip().endswith('Training can start.'), (r.stdout, r.stderr)
    r = run('pretrain-damsm', '--data', root, '--out', tmp_path/'damsm', '--preset', 'tiny', '--epochs', 1)
    assert r.returncode == 0, r.stderr
    assert f"({layout} layout), split 'train'" in r.stdout                   # the data report opens the log
    r = run('train', '--data', root, '--damsm', tmp_path/'damsm', '--out', tmp_path/'gan', '--preset', 'tiny', '--steps', 2, '--quiet')
    assert r.returncode == 0, r.stderr
    assert f"data: {root} ({layout} layout), split 'train'" in r.stdout, r.stdout
    cfg = json.loads((tmp_path/'gan'/'config.json').read_text())
    assert cfg['data']['root'] == str(root)
    r = run('sample', 'this bird has a red crown', '--run', tmp_path/'gan', '--out', tmp_path/'samples')
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path/'samples').glob('*.png'))) >= 2


def test_layouts_read_the_same_images_and_captions(birds_root, layouts):
    "Folder and table copies hold the same training images with the same captions in the same order (a fresh split of the same classes)."
    f, t = (CUBDataset(layouts[l], 'train', sizes=(32,)) for l in ('folder', 'table'))
    name = lambda k: k.split('/')[-1]
    assert [name(k) for k in f.keys] == [name(k) for k in t.keys] and f.captions == t.captions and f.class_ids == t.class_ids
    c = CUBDataset(layouts['coco'], 'train', sizes=(32,))                   # COCO keeps CUB's own split: train2014 = its training images
    cub = CUBDataset(birds_root, 'train', sizes=(32,))
    assert c.captions == cub.captions and len(set(c.class_ids)) == len(c)   # no classes: each image its own


def test_splits_are_class_disjoint_and_stable(layouts, tmp_path):
    f = layouts['folder']
    tr, te = CUBDataset(f, 'train', sizes=(32,)), None
    te = CUBDataset(f, 'test', sizes=(32,), vocab=tr.vocab)
    cls = lambda ds: {k.split('/')[0] for k in ds.keys}
    assert cls(tr) & cls(te) == set() and len(cls(te)) == round(0.25 * len(cls(tr) | cls(te)))
    moved = tmp_path/'moved'; shutil.copytree(f, moved)                     # another place on disk: the same split
    assert CUBDataset(moved, 'test', sizes=(32,), vocab=tr.vocab).keys == te.keys


def test_check_data_reports_a_damaged_folder(layouts, tmp_path):
    d = tmp_path/'damaged'; shutil.copytree(layouts['folder'], d)
    ims = sorted(d.rglob('*.jpg'))
    ims[0].with_suffix('.txt').unlink()                                      # caption file missing
    ims[1].with_suffix('.txt').write_bytes(b'\x00\x01\x02' * 50)             # not text
    ims[2].write_bytes(ims[2].read_bytes()[:len(ims[2].read_bytes()) // 2])  # a JPEG cut in half (its header whole)
    ims[3].unlink()                                                          # captions without an image: not listed at all
    text, ok = check_data(d, tiny())
    assert not ok
    assert '1 caption file missing: ' + ims[0].relative_to(d).with_suffix('').as_posix() in text, text
    assert '1 caption file not text: ' + ims[1].relative_to(d).with_suffix('').as_posix() in text, text
    assert 'image corrupt or truncated: ' + ims[2].relative_to(d).with_suffix('').as_posix() in text, text
    n = len(ims) - 1
    used = [int(l.split(': ')[1].split(' of ')[0]) for l in text.splitlines() if 'images used' in l]
    listed = [int(l.split(' of ')[1].split(' images')[0]) for l in text.splitlines() if 'images used' in l]
    assert sum(listed) == n and sum(used) == n - 3, text
    r = run('check-data', d, '--preset', 'tiny')
    assert r.returncode == 1 and 'Training would stop here:' in r.stdout and 'Traceback' not in r.stderr, (r.stdout, r.stderr)
    r = run('check-data', d, '--preset', 'tiny', '--fast')                  # headers only: the cut JPEG passes
    assert 'image corrupt or truncated' not in r.stdout


def test_check_data_on_a_table_with_fewer_captions(tmp_path, layouts):
    src = layouts['table']
    rows = (src/'captions.csv').read_text().splitlines()
    keep = [rows[0]] + [r for i, r in enumerate(rows[1:]) if i % 10 < 3]     # 3 captions an image instead of 10
    shutil.copytree(src/'images', tmp_path/'images'); (tmp_path/'captions.csv').write_text('\n'.join(keep) + '\n')
    text, ok = check_data(tmp_path, tiny())
    assert ok and 'found 3 in ' in text and 'with fewer, theirs repeated' in text, text
    ds = CUBDataset(tmp_path, 'train', sizes=(32,), captions_per_image=10)
    assert all(len(c) == 10 and c[3:6] == c[:3] for c in ds.captions)
