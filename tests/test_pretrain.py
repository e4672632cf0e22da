"DAMSM pre-training (attngan.pretrain): resume, atomic checkpoints, clear errors, the CLI hook; all on tiny data."
import json, os
from pathlib import Path
import pytest, torch
from attngan.config import tiny, UserError, InvalidInput, MissingPath
from attngan import pretrain as P
from attngan.damsm import TextEncoder


def quiet(*a): pass


pytestmark = pytest.mark.usefixtures('one_thread')   # conftest.py


@pytest.fixture(scope='module')
def run1(birds_root, tmp_path_factory):
    "A tiny run of one epoch (45 training images, batch 8: 5 steps)."
    out = tmp_path_factory.mktemp('runs')/'run1'
    P.pretrain_damsm(tiny(), out, data=birds_root, epochs=1, progress=False, log=quiet)
    return out


def _state(run): return torch.load(Path(run)/'damsm_state.pt', weights_only=True)
def _weights(run): return torch.load(Path(run)/'damsm.pt', weights_only=True)


def test_resume_continues_epochs_and_optimizer(run1, birds_root, tmp_path):
    run = tmp_path/'run'
    import shutil; shutil.copytree(run1, run)
    s1 = _state(run)
    assert (s1['epoch'], s1['step']) == (1, 5) and s1['optimizer']['state'][0]['step'].item() == 5
    hist = P.pretrain_damsm(tiny(), run, epochs=2, resume=True, progress=False, log=quiet)
    s2 = _state(run)
    assert [h['epoch'] for h in hist] == [1, 2] and [h['step'] for h in hist] == [5, 10]
    assert hist[0] == s1['history'][0]                                  # the first epoch's record is kept
    assert s2['optimizer']['state'][0]['step'].item() == 10             # one Adam, its moments carried on
    assert hist[1]['lr'] == pytest.approx(P.lr_at(1, tiny()))
    # two epochs in one go give the same weights as one epoch + one resumed epoch
    P.pretrain_damsm(tiny(), tmp_path/'straight', data=birds_root, epochs=2, progress=False, log=quiet)
    a, b = _weights(run), _weights(tmp_path/'straight')
    for k in ('text_encoder', 'image_encoder'):
        for x, y in zip(a[k].values(), b[k].values()): torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    # nothing left to do: a resumed run that already has its epochs returns the history unchanged
    assert P.pretrain_damsm(tiny(), run, epochs=2, resume=True, progress=False, log=quiet) == hist


def test_checkpoint_files_load_with_weights_only(run1):
    assert sorted(p.name for p in run1.iterdir()) == ['config.json', 'damsm.pt', 'damsm_state.pt', 'vocab.json']
    w, s = _weights(run1), _state(run1)                                  # weights_only=True: tensors and plain types only
    assert set(w) == {'kind', 'step', 'text_encoder', 'image_encoder'} and w['step'] == s['step'] == 5
    assert set(s) == {'optimizer', 'epoch', 'step', 'history', 'rng'}
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
    with pytest.raises(InvalidInput, match='already holds'): P.pretrain_damsm(tiny(), run1, data=birds_root, epochs=1, progress=False, log=quiet)
    with pytest.raises(MissingPath, match='Nothing to resume'): P.pretrain_damsm(tiny(), tmp_path/'new', resume=True, progress=False, log=quiet)
    with pytest.raises(InvalidInput, match='minutes'): P.pretrain_damsm(tiny(), tmp_path/'x', data=birds_root, minutes=0, progress=False)


def test_time_budget_and_divergence(run1, birds_root, tmp_path):
    h = P.pretrain_damsm(tiny(), tmp_path/'budget', data=birds_root, minutes=1e-6, epochs=3, progress=False, log=quiet)
    assert len(h) == 1 and h[0]['step'] == 1 and h[0]['partial']
    import shutil; run = tmp_path/'nan'; shutil.copytree(run1, run)
    c = json.loads((run/'config.json').read_text()); c['damsm']['gamma3'] = float('nan'); (run/'config.json').write_text(json.dumps(c))
    before = (run/'damsm.pt').read_bytes()
    with pytest.raises(P.LossDiverged, match='last good checkpoint .epoch 1.'): P.pretrain_damsm(tiny(), run, epochs=2, resume=True, progress=False, log=quiet)
    assert (run/'damsm.pt').read_bytes() == before


def test_cli_on_tiny_data(birds_root, tmp_path, capsys):
    res = P.cli_pretrain_damsm(data=str(birds_root), out=str(tmp_path/'cli'), preset='tiny', epochs=2, quiet=True)
    out = capsys.readouterr().out
    assert 'R-precision' in out and 'validation loss' in out and 'pointing game' in out and str(tmp_path/'cli') in out
    assert res['epochs'] == 2 and res['steps'] == 10 and res['n_images'] == 15 and 0 <= res['r_precision'] <= 100
    assert json.loads((tmp_path/'cli'/'damsm_eval.json').read_text())['steps'] == 10
    res2 = P.cli_pretrain_damsm(data=str(birds_root), out=str(tmp_path/'cli'), preset='tiny', epochs=3, resume=True, quiet=True)
    assert res2['epochs'] == 3 and res2['steps'] == 15
    with pytest.raises(UserError, match='Unknown preset'): P.cli_pretrain_damsm(data=str(birds_root), out=str(tmp_path/'c2'), preset='cub', quiet=True)
