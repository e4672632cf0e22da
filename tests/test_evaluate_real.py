"""`attngan evaluate` on a real data set (here the synthetic birds copied into the folder layout, so without their
ground truth): R-precision with the run's own DAMSM, the Inception Score and FID/KID on Inception features, each
row equal to the same measure computed again here from images read and generated independently."""
import json, os, subprocess, sys
import numpy as np, pytest, torch
from attngan.layouts import write_layout, CUBDataset
from attngan.damsm import r_precision
from attngan.pretrain import load_damsm
from attngan.sample import Text2Image, encode_captions
from attngan import evaluation as E
from attngan import metrics as M
from attngan import evaluator as R
from _inception_standin import standin_inception          # tests/_inception_standin.py, shared with test_metrics.py
from _cli import run                      # tests/_cli.py: `attngan ARGS` in a subprocess

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def evaluated(birds_root, tmp_path_factory) -> dict:
    "A folder-layout copy of the session's birds, a 1-epoch tiny DAMSM, a 2-step tiny GAN, and `attngan evaluate --quick` with a stand-in Inception file."
    d = tmp_path_factory.mktemp('real')
    folder = write_layout(birds_root, d/'folder', 'folder')
    r = run('pretrain-damsm', '--data', folder, '--out', d/'damsm', '--preset', 'tiny', '--epochs', 1)
    assert r.returncode == 0, r.stderr
    r = run('train', '--data', folder, '--damsm', d/'damsm', '--out', d/'gan', '--preset', 'tiny', '--steps', 2, '--quiet')
    assert r.returncode == 0, r.stderr
    w = standin_inception(d/'inception.pth')
    r = run('evaluate', '--run', d/'gan', '--data', folder, '--quick', '--inception-weights', w, '--quiet')
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    return dict(d=d, folder=folder, run=d/'gan', w=w, stdout=r.stdout, m=json.loads((d/'gan'/'eval'/'metrics.json').read_text()))


@pytest.fixture(scope='module')
def pairs(evaluated) -> dict:
    "Every (test image, distinct caption) pair, found here by hand (--quick's 500 exceed them all), and the real test images read again."
    pipe = Text2Image.from_checkpoint(evaluated['run'])
    ds = CUBDataset(evaluated['folder'], 'test', sizes=(pipe.cfg.gan.sizes[-1],), vocab=pipe.vocab, train=False)
    idx, texts = zip(*[(i, c) for i, caps in enumerate(ds.captions) for c in dict.fromkeys(caps)])
    images = torch.stack([((ds[(i, 0)]['images'][0] + 1) * 127.5).round().byte() for i in range(len(ds))])   # (N, 3, s, s)
    return dict(pipe=pipe, ds=ds, idx=torch.tensor(idx), texts=list(texts), images=images, cls=torch.tensor(ds.class_ids)[list(idx)])


def test_rows_table_and_files(evaluated, pairs):
    m, out = evaluated['m'], evaluated['stdout']
    assert [k for k in m if k != 'setup'] == ['r_precision', 'inception_score', 'fid_inception', 'kid_inception']
    for k in ('r_precision', 'inception_score', 'fid_inception'):
        assert m[k]['generated'] is not None and m[k]['real'] is not None, k
    s = m['setup']
    assert (s['layout'], s['n_images'], s['n_real']) == ('folder', len(pairs['texts']), len(pairs['ds'])), s
    assert (m['r_precision']['floor'], m['r_precision']['n']) == (1.0, len(pairs['texts']))
    line = next(l for l in out.splitlines() if l.startswith('r_precision '))
    assert line.split()[1:4] == [f"{m['r_precision'][k]:.4g}" for k in ('generated', 'real', 'floor')], line
    assert 'no Inception Score' not in out
    assert (evaluated['run']/'eval'/'metrics.png').stat().st_size > 10_000


@torch.no_grad()
def test_real_rows_equal_an_independent_computation(evaluated, pairs):
    "R-precision of the real images with the run's DAMSM, their Inception Score and real-vs-real FID, from the images read here."
    m, p, w = evaluated['m'], pairs, evaluated['w']
    te, ie, cfg, vocab = load_damsm(evaluated['run'])
    img = ie(p['images'].float() / 127.5 - 1)[1]                                            # (N, D) one per real image
    caps, lengths = encode_captions(vocab, p['texts'], p['pipe'].cfg.data.max_words)[:2]
    sent = te(caps, lengths)[1]                                                             # (P, D) one per pair
    rp = r_precision(img[p['idx']], sent, sent, p['cls'], p['cls'], seed=0)
    assert (m['r_precision']['real'], m['r_precision']['real_std']) == pytest.approx(rp, abs=1e-6)
    is_real = M.inception_score_tm(R.InceptionLogits(w), p['images'], seed=0)
    assert m['inception_score']['real'] == pytest.approx(is_real['mean'], rel=1e-6)
    assert m['inception_score']['n_real'] == len(p['images'])
    fid = M.fid_kid(R.InceptionFeatures(w), p['images'][0::2], p['images'][1::2], seed=0)
    assert m['fid_inception']['real'] == pytest.approx(fid['fid'], rel=1e-4)
    assert m['kid_inception']['real'] == pytest.approx(fid['kid'], rel=1e-3)


@torch.no_grad()
def test_generated_rows_equal_an_independent_computation(evaluated, pairs):
    "The images generate() draws for the pairs (one chunk, seed 0) give the rows' generated R-precision and IS; their FID is far above real vs real."
    m, p, w = evaluated['m'], pairs, evaluated['w']
    fake = E.generate(p['pipe'], p['texts'], seed=0)['images']
    te, ie, cfg, vocab = load_damsm(evaluated['run'])
    caps, lengths = encode_captions(vocab, p['texts'], p['pipe'].cfg.data.max_words)[:2]
    sent = te(caps, lengths)[1]
    rp = r_precision(ie(fake.float() / 127.5 - 1)[1], sent, sent, p['cls'], p['cls'], seed=0)
    assert (m['r_precision']['generated'], m['r_precision']['generated_std']) == pytest.approx(rp, abs=1e-6)
    is_fake = M.inception_score_tm(R.InceptionLogits(w), fake, seed=0)
    assert m['inception_score']['generated'] == pytest.approx(is_fake['mean'], rel=1e-6)
    assert m['inception_score']['real'] > m['inception_score']['generated']                 # noise-like images: one class for all
    f = m['fid_inception']
    assert f['generated_vs_half'] > 2 * f['real'] and f['generated'] > 2 * f['real'], f


def test_without_weights_and_a_folder_in_no_layout(evaluated, tmp_path):
    r = run('evaluate', '--run', evaluated['run'], '--data', evaluated['folder'], '--quick', '--out', tmp_path/'plain', '--quiet')
    assert r.returncode == 0, r.stderr
    assert sum('no Inception Score, FID or KID' in l and 'inception_v3_google-0cc3c7bd.pth' in l for l in r.stdout.splitlines()) == 1, r.stdout
    m = json.loads((tmp_path/'plain'/'metrics.json').read_text())
    assert list(m) == ['r_precision', 'setup'] and m['r_precision'] == evaluated['m']['r_precision']   # the same pairs and seed
    (tmp_path/'empty').mkdir()
    r = run('evaluate', '--run', evaluated['run'], '--data', tmp_path/'empty', '--quiet')
    assert r.returncode == 2 and 'holds none of the layouts attngan reads' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
