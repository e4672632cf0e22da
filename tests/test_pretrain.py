"DAMSM pre-training (attngan.pretrain, attngan.pretrain_runs): resume (also inside an epoch), random state, atomic checkpoints, clear errors, the CLI hook; all on tiny data."
import dataclasses, json, os, random
from pathlib import Path
import numpy as np, pytest, torch
from attngan.config import tiny, UserError, InvalidInput, MissingPath
from attngan import pretrain as P, pretrain_runs as PR
from attngan.damsm import TextEncoder


def quiet(*a): pass


pytestmark = pytest.mark.usefixtures('one_thread')   # conftest.py


@pytest.fixture(scope='module')
def run1(birds_root, tmp_path_factory):
    "A tiny run of one epoch (45 training images, batch 8: 5 steps)."
    out = tmp_path_factory.mktemp('runs')/'run1'
    with PR.torch_threads(1):             # as the tests (one_thread): runs compared bit for bit must use the same threads
        PR.pretrain_damsm(tiny(), out, data=birds_root, epochs=1, progress=False, log=quiet)
    return out


def _state(run): return torch.load(Path(run)/'damsm_state.pt', weights_only=True)
def _weights(run): return torch.load(Path(run)/'damsm.pt', weights_only=True)


def _assert_same_weights(run_a, run_b):
    a, b = _weights(run_a), _weights(run_b)
    for k in ('text_encoder', 'image_encoder'):
        assert list(a[k]) == list(b[k])
        for name in a[k]: assert torch.equal(a[k][name], b[k][name]), (k, name)


def test_resume_continues_epochs_and_optimizer(run1, birds_root, tmp_path):
    run = tmp_path/'run'
    import shutil; shutil.copytree(run1, run)
    s1 = _state(run)
    assert (s1['epoch'], s1['step']) == (1, 5) and s1['optimizer']['state'][0]['step'].item() == 5
    hist = PR.pretrain_damsm(tiny(), run, epochs=2, resume=True, progress=False, log=quiet)
    s2 = _state(run)
    assert [h['epoch'] for h in hist] == [1, 2] and [h['step'] for h in hist] == [5, 10]
    assert hist[0] == s1['history'][0]                                  # the first epoch's record is kept
    assert s2['optimizer']['state'][0]['step'].item() == 10             # one Adam, its moments carried on
    assert hist[1]['lr'] == pytest.approx(P.lr_at(1, tiny()))
    # two epochs in one go give the same weights as one epoch + one resumed epoch
    PR.pretrain_damsm(tiny(), tmp_path/'straight', data=birds_root, epochs=2, progress=False, log=quiet)
    _assert_same_weights(run, tmp_path/'straight')                     # bit for bit
    # nothing left to do: a resumed run that already has its epochs returns the history unchanged
    assert PR.pretrain_damsm(tiny(), run, epochs=2, resume=True, progress=False, log=quiet) == hist


def test_checkpoint_files_load_with_weights_only(run1):
    assert sorted(p.name for p in run1.iterdir()) == ['config.json', 'damsm.pt', 'damsm_state.pt', 'vocab.json']
    w, s = _weights(run1), _state(run1)                                  # weights_only=True: tensors and plain types only
    assert set(w) == {'kind', 'step', 'text_encoder', 'image_encoder'} and w['step'] == s['step'] == 5
    assert set(s) == {'optimizer', 'epoch', 'batch', 'sums', 'step', 'history', 'rng', 'text_encoder', 'image_encoder'} and s['batch'] == 0
    for k in ('text_encoder', 'image_encoder'):                         # the resume point carries the same weights
        assert w[k].keys() == s[k].keys() and all(torch.equal(w[k][n], s[k][n]) for n in w[k])
    te, ie, cfg, vocab = P.load_damsm(run1)
    assert cfg == P.Config.from_json(run1/'config.json') and not te.training and not ie.training
    json.loads((run1/'config.json').read_text()); json.loads((run1/'vocab.json').read_text())


def test_a_failed_save_keeps_the_old_checkpoint(run1, tmp_path, monkeypatch):
    import shutil; run = tmp_path/'run'; shutil.copytree(run1, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    te, ie, cfg, vocab = P.load_damsm(run)
    def torch_save_fails(obj, f, *a, **k):
        f.write(b'half a checkpoint'); raise OSError('No space left on device')
    monkeypatch.setattr(torch, 'save', torch_save_fails)
    with pytest.raises(OSError, match='No space left'): P.save_damsm(run, te, ie, cfg, vocab, state={'step': 99})
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in run.iterdir()}
    assert after == before                                               # same files, same bytes, no temporary file left
    P.load_damsm(run)


def _bad_dirs(src: Path, tmp: Path):
    "Broken run folders, each with the words its error message must contain."
    import shutil
    def copy(name):
        d = tmp/name; shutil.copytree(src, d); return d
    cases = [(tmp/'missing', 'No DAMSM run folder')]
    d = copy('no_vocab'); (d/'vocab.json').unlink(); cases.append((d, 'vocab.json is missing'))
    d = copy('generator'); (d/'damsm.pt').unlink(); torch.save({'stages.0.w': torch.zeros(1)}, d/'generator.pt'); cases.append((d, 'GAN run'))
    d = copy('gen_as_damsm'); torch.save({'stages.0.w': torch.zeros(1)}, d/'damsm.pt'); cases.append((d, 'not a DAMSM checkpoint'))
    d = copy('truncated'); (d/'damsm.pt').write_bytes((d/'damsm.pt').read_bytes()[:200]); cases.append((d, 'could not be read'))
    d = copy('shapes'); te, ie, cfg, vocab = P.load_damsm(d)
    P.save_damsm(d, TextEncoder(len(vocab) + 3, cfg.text), ie, cfg, vocab); cases.append((d, 'do not fit'))
    d = copy('config'); (d/'config.json').write_text('{"damsm": {"lr": 0.1, "nope": 1}}'); cases.append((d, 'unknown setting'))
    return cases


def test_bad_checkpoint_dirs_give_one_sentence(run1, tmp_path):
    for d, words in _bad_dirs(run1, tmp_path):
        with pytest.raises(UserError) as e: P.load_damsm(d)
        msg = str(e.value)
        assert words in msg, (d.name, msg)
        assert '\n' not in msg and msg.endswith('.') and msg.count('. ') == 0, (d.name, msg)
        assert isinstance(e.value, (InvalidInput, MissingPath))


def test_refuses_to_overwrite_and_to_resume_nothing(run1, birds_root, tmp_path):
    with pytest.raises(InvalidInput, match='already holds'): PR.pretrain_damsm(tiny(), run1, data=birds_root, epochs=1, progress=False, log=quiet)
    with pytest.raises(MissingPath, match='Nothing to resume'): PR.pretrain_damsm(tiny(), tmp_path/'new', resume=True, progress=False, log=quiet)
    with pytest.raises(InvalidInput, match='minutes'): PR.pretrain_damsm(tiny(), tmp_path/'x', data=birds_root, minutes=0, progress=False)


def test_time_budget_and_divergence(run1, birds_root, tmp_path, monkeypatch):
    h = PR.pretrain_damsm(tiny(), tmp_path/'budget', data=birds_root, minutes=1e-6, epochs=3, progress=False, log=quiet)
    assert len(h) == 1 and h[0]['step'] == 1 and h[0]['partial']
    import shutil; run = tmp_path/'nan'; shutil.copytree(run1, run)
    real = P.batch_loss                                                       # from the resumed step on, the loss is NaN
    monkeypatch.setattr(P, 'batch_loss', lambda *a, **k: real(*a, **k)._replace(loss=torch.tensor(float('nan'))))
    before = (run/'damsm.pt').read_bytes()
    with pytest.raises(P.LossDiverged, match='last good checkpoint .epoch 1.'): PR.pretrain_damsm(tiny(), run, epochs=2, resume=True, progress=False, log=quiet)
    assert (run/'damsm.pt').read_bytes() == before


def test_cli_on_tiny_data(birds_root, tmp_path, capsys):
    res = PR.cli_pretrain_damsm(data=str(birds_root), out=str(tmp_path/'cli'), preset='tiny', epochs=2, quiet=True)
    out = capsys.readouterr().out
    assert 'R-precision' in out and 'validation loss' in out and 'pointing game' in out and str(tmp_path/'cli') in out
    assert res['epochs'] == 2 and res['steps'] == 10 and res['n_images'] == 15
    saved = json.loads((tmp_path/'cli'/'damsm_eval.json').read_text())
    assert saved['steps'] == 10 and saved['r_precision'] == res['r_precision'] and f"{res['r_precision']:.1f} +- " in out
    again = P.evaluate_damsm(tmp_path/'cli', log=quiet)                  # the printed numbers are the run's, reproducibly
    assert (again['r_precision'], again['localisation']) == (res['r_precision'], res['localisation'])
    res2 = PR.cli_pretrain_damsm(data=str(birds_root), out=str(tmp_path/'cli'), preset='tiny', epochs=3, resume=True, quiet=True)
    assert res2['epochs'] == 3 and res2['steps'] == 15
    with pytest.raises(UserError, match='Unknown preset'): PR.cli_pretrain_damsm(data=str(birds_root), out=str(tmp_path/'c2'), preset='cub', quiet=True)


# ---- resuming inside an epoch ------------------------------------------------------------------------------------

def _record_batches(monkeypatch):
    "Make pretrain_damsm's damsm_step note each batch it gets: (keys, caption indices, image checksum)."
    seen, step = [], P.damsm_step
    def spy(batch, *a, **k):
        seen.append((tuple(batch['keys']), tuple(batch['caption_idx'].tolist()), float(batch['images'][-1].double().sum())))
        return step(batch, *a, **k)
    monkeypatch.setattr(PR, 'damsm_step', spy)
    return seen


@pytest.mark.parametrize('stop_at,bucket', [(3, False), (7, False), (7, True)])
def test_resume_inside_an_epoch_equals_an_uninterrupted_run(birds_root, tmp_path, monkeypatch, stop_at, bucket):
    "5 steps an epoch: stop after `stop_at` steps, resume to 2 epochs; same batches, same weights, same records."
    cfg = tiny(); cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, bucket_by_length=bucket))
    seen = _record_batches(monkeypatch)
    straight = PR.pretrain_damsm(cfg, tmp_path/'straight', data=birds_root, epochs=2, progress=False, log=quiet)
    all_batches = list(seen); seen.clear()
    h1 = PR.pretrain_damsm(cfg, tmp_path/'run', data=birds_root, epochs=2, max_steps=stop_at, progress=False, log=quiet)
    s = _state(tmp_path/'run')
    assert h1[-1]['partial'] and (s['epoch'], s['batch'], s['step']) == (stop_at // 5, stop_at % 5, stop_at)
    h2 = PR.pretrain_damsm(cfg, tmp_path/'run', epochs=2, resume=True, progress=False, log=quiet)
    assert seen == all_batches                                           # the batches, in order, with their crops
    _assert_same_weights(tmp_path/'run', tmp_path/'straight')            # bit for bit
    assert _state(tmp_path/'run')['optimizer']['state'][0]['step'].item() == 10 and _state(tmp_path/'run')['batch'] == 0
    no_time = lambda hs: [{k: v for k, v in h.items() if k != 'seconds'} for h in hs]
    assert no_time(h2) == no_time(straight) and [h['partial'] for h in h2] == [False, False]


def test_resume_inside_an_epoch_by_the_time_budget(birds_root, tmp_path, monkeypatch):
    "A run stopped by `minutes` (after its first step) also resumes into the rest of its epoch."
    PR.pretrain_damsm(tiny(), tmp_path/'straight', data=birds_root, epochs=1, progress=False, log=quiet)
    h = PR.pretrain_damsm(tiny(), tmp_path/'run', data=birds_root, minutes=1e-6, epochs=1, progress=False, log=quiet)
    assert [(x['step'], x['partial']) for x in h] == [(1, True)] and _state(tmp_path/'run')['batch'] == 1
    h = PR.pretrain_damsm(tiny(), tmp_path/'run', epochs=1, resume=True, progress=False, log=quiet)
    assert [(x['epoch'], x['step'], x['partial']) for x in h] == [(1, 5, False)]
    _assert_same_weights(tmp_path/'run', tmp_path/'straight')


# ---- validation and evaluation leave the global random numbers alone ----------------------------------------------

def _global_states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _no_reseeding(monkeypatch):
    "Make any reseeding of torch (CPU or CUDA) fail the test."
    def refuse(*a, **k): raise AssertionError('the global torch generator was reseeded')
    for mod, name in ((torch, 'manual_seed'), (torch.random, 'manual_seed'), (torch, 'seed'), (torch.cuda, 'manual_seed'),
                      (torch.cuda, 'manual_seed_all'), (torch.cuda, 'seed_all')):
        monkeypatch.setattr(mod, name, refuse)


def test_val_loss_and_encode_pairs_leave_the_global_rng_alone(run1, birds_root, monkeypatch):
    te, ie, cfg, vocab = P.load_damsm(run1)
    te.train(); ie.train()
    train_ds, test_ds = P.damsm_datasets(cfg, birds_root, vocab)
    idx, cidx = np.arange(len(test_ds)), P.caption_choice(len(test_ds), seed=0)
    torch.manual_seed(5); before = _global_states()
    with monkeypatch.context() as m:
        _no_reseeding(m)
        v = P.val_loss(test_ds, te, ie, cfg)
        enc = P.encode_pairs(test_ds, te, ie, idx, cidx, cfg, max_words=4)      # captions cut: random words dropped
    after = _global_states()
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])
    assert te.training and ie.training and test_ds.train is False and test_ds.max_words == cfg.data.max_words
    torch.manual_seed(123); torch.rand(7)                                # another global state: the same results
    assert P.val_loss(test_ds, te, ie, cfg) == v
    enc2 = P.encode_pairs(test_ds, te, ie, idx, cidx, cfg, max_words=4)
    assert all(torch.equal(enc[k], enc2[k]) for k in enc)
    assert P.val_loss(test_ds, te, ie, cfg, seed=1) != v                  # ... and the seeds drive the draws
    assert not torch.equal(P.encode_pairs(test_ds, te, ie, idx, cidx, cfg, max_words=4, seed=1)['sent'], enc['sent'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_validation_leaves_the_cuda_generator_alone(run1, birds_root):
    "The bug this guards against: torch.manual_seed inside fork_rng(devices=[]) reset the CUDA generator every epoch."
    te, ie, cfg, vocab = P.load_damsm(run1, map_location='cuda')
    _, test_ds = P.damsm_datasets(cfg, birds_root, vocab)
    torch.cuda.manual_seed(11); torch.rand(5, device='cuda'); before = torch.cuda.get_rng_state()
    P.val_loss(test_ds, te, ie, cfg)
    P.encode_pairs(test_ds, te, ie, np.arange(len(test_ds)), P.caption_choice(len(test_ds)), cfg)
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_resume_inside_an_epoch_on_cuda(birds_root, tmp_path):
    "On a GPU the dropout masks come from the CUDA generator: it is saved and restored with the checkpoint."
    kw = dict(data=birds_root, epochs=2, progress=False, log=quiet, device='cuda')
    PR.pretrain_damsm(tiny(), tmp_path/'straight', **kw)
    PR.pretrain_damsm(tiny(), tmp_path/'run', max_steps=7, **kw)
    assert 'cuda' in _state(tmp_path/'run')['rng']
    PR.pretrain_damsm(tiny(), tmp_path/'run', resume=True, **kw)
    _assert_same_weights(tmp_path/'run', tmp_path/'straight')
