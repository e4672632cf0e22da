"The GAN training loop on tiny(): exact resume, NaN stop, safe checkpoints, clear errors for wrong folders."
import re
import json
from pathlib import Path
import pytest, torch
import attngan.train as T, attngan.runs as R
from attngan.config import UserError, tiny
from attngan.runs import train, main_train, cli_train

quiet = dict(progress=False, log=lambda *a, **k: None)


def one_line(e): return str(e.value).count('\n') == 0


def load(p): return torch.load(p, map_location='cpu', weights_only=True)


def same_tensors(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


pytestmark = pytest.mark.usefixtures('one_thread')   # conftest.py


def test_resume_matches_uninterrupted(tmp_path):
    a, b = tmp_path/'straight', tmp_path/'resumed'
    train(tiny(), a, steps=4, **quiet)
    train(tiny(), b, steps=2, **quiet)
    assert load(b/'train_state.pt')['step'] == 2
    train(None, b, steps=4, resume=True, **quiet)
    assert same_tensors(load(a/'generator.pt'), load(b/'generator.pt'))       # EMA weights, bit for bit
    sa, sb = load(a/'train_state.pt'), load(b/'train_state.pt')
    assert (sa['step'], sa['epoch'], sa['batch']) == (sb['step'], sb['epoch'], sb['batch']) == (4, 0, 4)
    assert same_tensors(sa['G'], sb['G'])
    assert all(same_tensors(x, y) for x, y in zip(sa['Ds'], sb['Ds']))
    assert all(torch.equal(x['exp_avg_sq'], y['exp_avg_sq']) for x, y in zip(sa['opt_g']['state'].values(), sb['opt_g']['state'].values()))
    assert [h['G'] for h in sa['history']] == [h['G'] for h in sb['history']]


def test_resume_with_new_learning_rates(tmp_path):
    "A resumed run may take new learning rates: Adam keeps its moments and uses the new rates, and config.json records them."
    run, logs = tmp_path/'r', []
    train(tiny(), run, steps=2, **quiet)
    before = load(run/'train_state.pt')
    cfg = tiny(); cfg.train.lr_g, cfg.train.lr_d = 1e-5, 2e-5
    train(cfg, run, steps=3, resume=True, progress=False, log=lambda *a, **k: logs.append(' '.join(map(str, a))))
    sd = load(run/'train_state.pt')
    assert sd['step'] == 3 and {g['lr'] for g in sd['opt_g']['param_groups']} == {1e-5}
    assert {g['lr'] for o in sd['opt_ds'] for g in o['param_groups']} == {2e-5}
    assert sd['opt_g']['state'][0]['step'] == before['opt_g']['state'][0]['step'] + 1   # the same Adam, one step on
    assert json.loads((run/'config.json').read_text())['train']['lr_g'] == 1e-5
    assert any('new learning rates (lr_g: 0.0002 -> 1e-05; lr_d: 0.0002 -> 2e-05)' in l for l in logs), logs
    train(None, run, steps=4, resume=True, **quiet)                                # a plain resume keeps the new rates
    sd = load(run/'train_state.pt')
    assert sd['step'] == 4 and {g['lr'] for g in sd['opt_g']['param_groups']} == {1e-5}


def test_resume_across_an_epoch_boundary(tmp_path):
    "tiny(): 12 batches per epoch; stopping at 11 and resuming to 14 crosses into epoch 1 like a straight run."
    a, b = tmp_path/'a', tmp_path/'b'
    cfg = tiny(); cfg.train.ckpt_every = cfg.train.sample_every = 100
    train(cfg, a, steps=14, **quiet)
    train(cfg, b, steps=11, **quiet)
    train(None, b, steps=14, resume=True, **quiet)
    sa, sb = load(a/'train_state.pt'), load(b/'train_state.pt')
    assert (sb['epoch'], sb['batch']) == (1, 2) and same_tensors(sa['G_ema'], sb['G_ema'])


def test_every_file_loads_with_weights_only(tmp_path):
    run = tmp_path/'run'
    train(tiny(), run, steps=2, **quiet)
    names = sorted(p.name for p in run.iterdir() if p.is_file())
    assert names == ['config.json', 'damsm.pt', 'generator.pt', 'legs.json', 'losses.json', 'losses.png', 'train_state.pt', 'vocab.json']
    for p in run.glob('*.pt'): load(p)
    st = load(run/'train_state.pt')
    assert st['kind'] == 'attngan.train' and len(st['Ds']) == 2 and len(st['history']) == 2
    assert json.loads((run/'losses.json').read_text())[-1]['step'] == 2
    assert not list(run.glob('.*tmp*'))                                      # no temporary files left behind
    from attngan.core import Generator
    from attngan.config import Config
    G = Generator(Config.from_json(run/'config.json')); G.load_state_dict(load(run/'generator.pt'))
    from attngan.pretrain import load_damsm
    text_encoder, image_encoder, cfg, vocab = load_damsm(run)                 # the run carries its DAMSM
    assert len(vocab) == text_encoder.embed.num_embeddings


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls, real_kl = [0], T.kl_loss
    def kl(mu, logvar):
        calls[0] += 1
        return real_kl(mu, logvar) * (float('nan') if calls[0] == 3 else 1.)
    monkeypatch.setattr(T, 'kl_loss', kl)
    run = tmp_path/'run'
    with pytest.raises(UserError, match='stopped at step 3: the G loss became nan') as e: train(tiny(), run, steps=6, **quiet)
    assert one_line(e) and 'last good checkpoint (step 2)' in str(e.value)
    assert load(run/'train_state.pt')['step'] == 2
    assert all(torch.isfinite(v).all() for v in load(run/'generator.pt').values() if v.is_floating_point())
    monkeypatch.setattr(T, 'kl_loss', real_kl)
    assert train(None, run, steps=4, resume=True, **quiet).step == 4           # and it resumes from there


def test_nan_at_the_first_step_keeps_step_0(tmp_path, monkeypatch):
    monkeypatch.setattr(T, 'kl_loss', lambda mu, logvar: mu.sum() * float('inf'))
    with pytest.raises(UserError, match=r'stopped at step 1: the G loss became (inf|nan).*checkpoint \(step 0\)') as e:
        train(tiny(), tmp_path/'r', steps=3, **quiet)
    assert one_line(e) and load(tmp_path/'r'/'train_state.pt')['step'] == 0


def test_time_budget_stops_and_checkpoints(tmp_path):
    lines = []
    st = train(tiny(), tmp_path/'r', minutes=1e-6, steps=10, progress=False, log=lines.append)
    assert st.step == 1 and load(tmp_path/'r'/'train_state.pt')['step'] == 1
    assert any('Time budget' in l for l in lines)


def test_quiet_mode_prints_no_bar(tmp_path, capfd):
    train(tiny(), tmp_path/'r', steps=2, progress=False)
    out = capfd.readouterr().out
    assert '█' not in out and not re.search(r'\d% \[', out) and 'step 2/2' in out     # no bar ("100.00% [2/2 ...]"), log lines


def test_with_a_damsm_folder(tmp_path):
    "The DAMSM's text/DAMSM settings and vocabulary are adopted, and the run keeps a copy of its weights."
    from attngan.pretrain import save_damsm, load_damsm
    from attngan.damsm import TextEncoder, image_encoder
    from attngan.data import Vocab
    dcfg = tiny(); dcfg.text.hidden_dim = 6; dcfg.damsm.cnn_width = 4
    vocab = Vocab(Vocab.specials + ['bird', 'red', 'a', 'this', 'has', 'wings', 'crown', 'white', 'belly'])
    te, ie = TextEncoder(len(vocab), dcfg.text), image_encoder(dcfg)
    save_damsm(tmp_path/'damsm', te, ie, dcfg, vocab)
    st = train(tiny(), tmp_path/'gan', damsm=tmp_path/'damsm', steps=2, **quiet)
    assert st.cfg.text.feat_dim == 12 and st.vocab == vocab
    te2, ie2, cfg2, vocab2 = load_damsm(tmp_path/'gan')
    assert vocab2 == vocab and same_tensors(te2.state_dict(), te.state_dict()) and same_tensors(ie2.state_dict(), ie.state_dict())


def test_bad_damsm_path_is_one_sentence(tmp_path, capsys):
    with pytest.raises(UserError, match='No DAMSM run folder') as e: cli_train(damsm=tmp_path/'nowhere', out=tmp_path/'r', preset='tiny', quiet=True)
    assert one_line(e) and 'pretrain-damsm' in str(e.value)
    assert main_train(['--damsm', str(tmp_path/'nowhere'), '--out', str(tmp_path/'r'), '--preset', 'tiny', '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err and 'No DAMSM run folder' in err
    (tmp_path/'empty').mkdir()
    with pytest.raises(UserError, match='is missing; a DAMSM run folder holds') as e: cli_train(damsm=tmp_path/'empty', out=tmp_path/'r', preset='tiny', quiet=True)
    assert one_line(e)
    assert not (tmp_path/'r').exists()                                        # nothing written for a failed start


def test_wrong_folder_to_resume(tmp_path):
    from attngan.pretrain import save_damsm
    from attngan.damsm import TextEncoder, image_encoder
    from attngan.data import Vocab
    cfg, vocab = tiny(), Vocab(Vocab.specials + ['bird'])
    save_damsm(tmp_path/'damsm', TextEncoder(len(vocab), cfg.text), image_encoder(cfg), cfg, vocab)
    with pytest.raises(UserError, match='DAMSM pre-training run') as e: train(None, tmp_path/'damsm', resume=True, **quiet)
    assert one_line(e)
    with pytest.raises(UserError, match='nothing to resume') as e: train(None, tmp_path, resume=True, **quiet)
    assert one_line(e)
    with pytest.raises(UserError, match='no run folder') as e: train(None, tmp_path/'nope', resume=True, **quiet)
    (tmp_path/'bad').mkdir(); (tmp_path/'bad'/'train_state.pt').write_bytes(b'garbage')
    with pytest.raises(UserError, match='damaged') as e: train(None, tmp_path/'bad', resume=True, **quiet)
    assert one_line(e)
    torch.save({'step': 3}, tmp_path/'bad'/'train_state.pt')
    with pytest.raises(UserError, match='not an attngan training checkpoint'): train(None, tmp_path/'bad', resume=True, **quiet)


def test_refuses_to_overwrite_a_run(tmp_path):
    train(tiny(), tmp_path/'r', steps=1, **quiet)
    with pytest.raises(UserError, match='already holds a training run') as e: train(tiny(), tmp_path/'r', steps=2, **quiet)
    assert one_line(e)
    st = train(None, tmp_path/'r', steps=1, resume=True, **quiet)            # at the target already: nothing to do
    assert st.step == 1


def test_mismatched_checkpoint(tmp_path):
    run = tmp_path/'r'
    train(tiny(), run, steps=1, **quiet)
    from attngan.config import Config
    cfg = Config.from_json(run/'config.json'); cfg.gan.ngf = 8
    (run/'config.json').write_text(cfg.to_json())
    with pytest.raises(UserError, match='does not fit the networks') as e: train(None, run, steps=2, resume=True, **quiet)
    assert one_line(e)


@pytest.mark.parametrize('image_size', [16, 32, 64], ids=['downsample', 'no-resize', 'upsample'])
def test_bf16_step_for_any_damsm_input_size(tmp_path, image_size):
    "tiny()'s last stage is 32 px: a DAMSM input of 16 shrinks it (anti-aliased), 32 keeps it, 64 grows it; bf16 trains in all three."
    hist = {}
    for amp in ('', 'bf16'):
        cfg = tiny(); cfg.damsm.image_size = image_size; cfg.train.amp = amp
        hist[amp] = train(cfg, tmp_path/(amp or 'fp32'), steps=1, **quiet).history[-1]
    for k in ('D0', 'D1', 'G_adv', 'DAMSM', 'KL', 'G'):
        assert hist['bf16'][k] == pytest.approx(hist[''][k], rel=2e-2), k     # same step, bfloat16 tolerance


def test_training_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    "A run draws every random number from its own generators: it never calls torch.manual_seed (which reseeds every GPU too)."
    def refuse(*a, **k): raise AssertionError('torch.manual_seed called: it reseeds the global RNG of every device')
    for mod, name in ((torch, 'manual_seed'), (torch.random, 'manual_seed'), (torch.cuda, 'manual_seed'), (torch.cuda, 'manual_seed_all')):
        monkeypatch.setattr(mod, name, refuse)
    rng = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    st = train(tiny(), tmp_path/'r', steps=2, device='cpu', **quiet)
    assert st.step == 2 and torch.equal(torch.get_rng_state(), rng)
    if cuda is not None: assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda))


def test_samples_and_weights_do_not_depend_on_the_global_rng(tmp_path):
    "The same run started from two different global RNG states: the same weights, bit for bit."
    torch.manual_seed(1); a = train(tiny(), tmp_path/'a', steps=2, **quiet)
    torch.manual_seed(2); torch.rand(7); b = train(tiny(), tmp_path/'b', steps=2, **quiet)
    assert same_tensors(T.bare(a.G).state_dict(), T.bare(b.G).state_dict())
    assert [h['G'] for h in a.history] == [h['G'] for h in b.history]
    from attngan.layouts import CUBDataset
    from attngan.birdset import synth_root
    c = tiny().data
    ds = R.SeededSamples(CUBDataset(synth_root(c.synth_n, c.synth_size, c.synth_seed, progress=False), 'train', sizes=(16, 32)))
    torch.manual_seed(3); x = ds[(2, 1, 99)]
    torch.manual_seed(4); y = ds[(2, 1, 99)]
    assert all(torch.equal(u, v) for u, v in zip(x['images'], y['images'])) and torch.equal(x['caption'], y['caption'])


# ---- options beyond the paper in the training step (cfg.gan: word_disc, ma_gp, gan_loss, perceptual) ----

def test_default_run_is_the_one_before_the_options(tmp_path):
    """With every option off the step is the paper's: the step-4 losses of `train(tiny(), out, steps=4)` are those
    the code printed before the options were wired in (one torch thread), from
    `git archive 4bf23e7 attngan | tar -x; python -c "import torch; torch.set_num_threads(1);
    from attngan.config import tiny; from attngan.train import train;
    print(train(tiny(), 'run', steps=4, progress=False).history[-1])"` (the run's files were bit-identical)."""
    st = train(tiny(), tmp_path/'run', steps=4, **quiet)
    h = {k: v for k, v in st.history[-1].items() if k != 'sec'}
    pinned = {'step': 4, 'epoch': 0, 'D0': 1.4919672012329102, 'D1': 1.7864567041397095, 'D': 3.27842378616333,
              'G': 30.439157485961914, 'G_adv': 2.350924253463745, 'DAMSM': 5.617368698120117, 'KL': 0.0013897111639380455}
    assert list(h) == list(pinned)                             # no new loss terms in the history
    assert h == pytest.approx(pinned, rel=1e-5)
    assert R.word_term(st) is None and st.terms == []


def _two_steps(tmp_path, name, *sets):
    from attngan.config import apply_sets
    return train(apply_sets(tiny(), list(sets)), tmp_path/name, steps=2, **quiet)


@pytest.fixture(scope='module')
def paper_run(tmp_path_factory):
    "The default 2-step tiny() run: step 1 sees the same weights, batch and fakes as any option's step 1."
    torch.set_num_threads(1)
    return train(tiny(), tmp_path_factory.mktemp('paper')/'run', steps=2, **quiet).history


def test_word_disc_trains_and_adds_its_term(tmp_path, paper_run):
    from attngan.options import build_word_discriminator
    st = _two_steps(tmp_path, 'wd', 'gan.word_disc=0.5')
    h1, p1 = st.history[0], paper_run[0]
    assert all(torch.isfinite(torch.tensor(h[k])) for h in st.history for k in ('WD', 'G_word'))
    assert h1['D'] == pytest.approx(p1['D'], rel=1e-6)                    # the stage Ds are untouched by the option
    assert h1['G'] == pytest.approx(p1['G'] + 0.5 * h1['G_word'], rel=1e-5)   # G's loss gains word_disc * G_word
    fresh = build_word_discriminator(st.cfg)
    assert not torch.equal(R.word_term(st).WD.proj.weight, fresh.proj.weight)          # the word D's weights moved
    sd = load(tmp_path/'wd'/'train_state.pt')
    assert same_tensors(sd['WD'], R.word_term(st).WD.state_dict()) and sd['opt_wd']['state']
    assert all(p.requires_grad for p in R.word_term(st).WD.parameters())               # frozen only during the G step


def test_ma_gp_is_inside_the_d_loss(tmp_path, paper_run):
    st = _two_steps(tmp_path, 'gp', 'gan.ma_gp=2')
    h1, p1 = st.history[0], paper_run[0]
    assert h1['GP'] > 0 and all(torch.isfinite(torch.tensor(h['GP'])) for h in st.history)
    assert h1['D'] == pytest.approx(p1['D'] + h1['GP'], rel=1e-5)         # D = the paper's D loss + the penalty
    assert h1['DAMSM'] == pytest.approx(p1['DAMSM'], rel=1e-6)            # same fakes at step 1 (G not yet updated)
    assert h1['G_adv'] != pytest.approx(p1['G_adv'], rel=1e-4)            # judged by Ds that the penalty moved


def test_hinge_changes_both_losses(tmp_path, paper_run):
    st = _two_steps(tmp_path, 'hinge', 'gan.gan_loss=hinge')
    h1, p1 = st.history[0], paper_run[0]
    assert 'GP' not in h1 and h1['D'] != pytest.approx(p1['D'], rel=1e-3) and h1['G_adv'] != pytest.approx(p1['G_adv'], rel=1e-3)
    assert h1['DAMSM'] == pytest.approx(p1['DAMSM'], rel=1e-6)


def test_perceptual_adds_its_term(tmp_path, paper_run):
    st = _two_steps(tmp_path, 'perc', 'gan.perceptual=3')
    h1, p1 = st.history[0], paper_run[0]
    assert all(h['G_perc'] > 0 for h in st.history) and 'WD' not in h1
    assert h1['G'] == pytest.approx(p1['G'] + 3 * h1['G_perc'], rel=1e-5)


def _one_generated_batch(cfg):
    "A fresh run's state, its DAMSM image encoder, one batch of 4, its word/sentence features and G's images of it."
    from attngan.damsm import TextEncoder, image_encoder
    from attngan.data import collate
    _, ds = R.run_data(cfg, 'synth')
    with T.seeded_init(0): te, ie = TextEncoder(len(ds.vocab), cfg.text), image_encoder(cfg)
    st = T.build_state(cfg, ds.vocab, te, ie, terms=R.extra_terms)
    b = collate([ds[(i, 0)] for i in range(4)])
    words, sent = te(b['captions'], b['lengths'])
    return st, ie, b, words, sent, st.G(torch.randn(4, cfg.gan.z_dim), sent, words, b['mask'])


def test_perceptual_is_the_region_distance_to_the_real_image():
    "g_step's G_perc against the DAMSM regions of the generated and the real image, computed here."
    from attngan.config import apply_sets
    cfg = apply_sets(tiny(), ['gan.perceptual=1'])
    st, ie, b, words, sent, fake = _one_generated_batch(cfg)
    with torch.no_grad(): ref = (ie(fake.images[-1])[0] - ie(b['images'][-1])[0]).pow(2).mean()
    logs = T.g_step(fake, st.Ds, st.opt_g, ie, words, sent, b['mask'], b['class_ids'], cfg, terms=st.terms,
                    regions_real=T.real_regions(ie, b['images'][-1]))
    assert logs['G_perc'].item() == pytest.approx(ref.item(), rel=1e-5) and ref > 0
    with pytest.raises(UserError, match='regions_real'):
        T.g_step(fake, st.Ds, st.opt_g, ie, words, sent, b['mask'], b['class_ids'], cfg, terms=st.terms)


def test_damsm_every_stage_adds_its_term(tmp_path, paper_run):
    st = _two_steps(tmp_path, 'every', 'gan.damsm_every_stage=true')
    h1, p1 = st.history[0], paper_run[0]
    assert all(h['DAMSM_early'] > 0 for h in st.history)
    assert h1['D'] == pytest.approx(p1['D'], rel=1e-6) and h1['DAMSM'] == pytest.approx(p1['DAMSM'], rel=1e-6)
    assert h1['G'] == pytest.approx(p1['G'] + st.cfg.gan.lambda_damsm * h1['DAMSM_early'], rel=1e-5)
    assert st.history[1]['G_adv'] != pytest.approx(paper_run[1]['G_adv'], rel=1e-4)   # G's first update differed


def test_damsm_every_stage_is_the_earlier_images_damsm_loss():
    "g_step's DAMSM_early against the DAMSM loss of the first stage's image (tiny() has two stages), computed here."
    from attngan.config import apply_sets
    from attngan.damsm import damsm_loss
    cfg = apply_sets(tiny(), ['gan.damsm_every_stage=true'])
    st, ie, b, words, sent, fake = _one_generated_batch(cfg)
    with torch.no_grad():
        ref = damsm_loss(*ie(fake.images[0]), words, sent, b['mask'], b['class_ids'], cfg).loss
        last = damsm_loss(*ie(fake.images[-1]), words, sent, b['mask'], b['class_ids'], cfg).loss
    logs = T.g_step(fake, st.Ds, st.opt_g, ie, words, sent, b['mask'], b['class_ids'], cfg, terms=st.terms)
    assert logs['DAMSM_early'].item() == pytest.approx(ref.item(), rel=1e-5)
    assert logs['DAMSM'].item() == pytest.approx(last.item(), rel=1e-5) and ref.item() != last.item()   # two different images


def test_resume_bit_exact_with_word_disc_and_ma_gp(tmp_path):
    from attngan.config import apply_sets
    sets = ['gan.word_disc=1', 'gan.ma_gp=2', 'gan.gan_loss=hinge', 'gan.perceptual=1']
    a, b = tmp_path/'straight', tmp_path/'resumed'
    train(apply_sets(tiny(), sets), a, steps=4, **quiet)
    train(apply_sets(tiny(), sets), b, steps=2, **quiet)
    train(None, b, steps=4, resume=True, **quiet)
    sa, sb = load(a/'train_state.pt'), load(b/'train_state.pt')
    assert same_tensors(sa['G'], sb['G']) and same_tensors(sa['WD'], sb['WD'])
    assert all(same_tensors(x, y) for x, y in zip(sa['Ds'], sb['Ds']))
    assert all(torch.equal(x['exp_avg_sq'], y['exp_avg_sq']) for x, y in zip(sa['opt_wd']['state'].values(), sb['opt_wd']['state'].values()))
    assert [h['WD'] for h in sa['history']] == [h['WD'] for h in sb['history']]
    assert [h['GP'] for h in sa['history']] == [h['GP'] for h in sb['history']]


def test_checkpoint_without_the_word_disc_is_refused(tmp_path):
    from attngan.config import apply_sets
    from attngan.pretrain import load_damsm
    train(tiny(), tmp_path/'run', steps=1, **quiet)
    te, ie, _, vocab = load_damsm(tmp_path/'run')
    st = T.build_state(apply_sets(tiny(), ['gan.word_disc=1']), vocab, te, ie, terms=R.extra_terms)
    with pytest.raises(UserError, match='word discriminator not saved') as e: R.restore(st, load(tmp_path/'run'/'train_state.pt'))
    assert one_line(e)
