"The `attngan` command end to end on the tiny() preset: pretrain-damsm -> train -> sample, and its one-line errors."
import json, subprocess, sys
from pathlib import Path
import pytest, torch
from _cli import run                      # tests/_cli.py: `attngan ARGS` in a subprocess


def one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr and r.stderr.strip().count('\n') == 0, r.stderr
    for w in words: assert w in r.stderr, r.stderr


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    r = run('pretrain-damsm', '--preset', 'tiny', '--out', d/'damsm', '--epochs', 1, '--quiet')
    assert r.returncode == 0, r.stderr
    r = run('train', '--preset', 'tiny', '--damsm', d/'damsm', '--out', d/'gan', '--steps', 2, '--quiet')
    assert r.returncode == 0, r.stderr
    return d


def test_sample_writes_every_stage_and_attention(tiny_run):
    out = tiny_run/'samples'
    r = run('sample', 'this bird has a red crown and a white belly', 'a small bird with zzyzx wings',
            '--run', tiny_run/'gan', '--out', out, '--n', 2, '--seed', 5)
    assert r.returncode == 0, r.stderr
    assert "'zzyzx'" in r.stdout and 'not in the vocabulary' in r.stdout
    names = sorted(p.name for p in out.glob('*.png'))
    assert 'caption1_sample1_16px.png' in names and 'caption1_sample1_32px.png' in names
    assert 'caption0_sample0_attention.png' in names and len(names) == 2 * 2 * 3


def test_sample_errors(tiny_run):
    one_line_error(run('sample', '   ', '--run', tiny_run/'gan', '--out', tiny_run/'x'), 'has no words')
    one_line_error(run('sample', 'qqq zzz', '--run', tiny_run/'gan', '--out', tiny_run/'x'), 'None of the words')
    one_line_error(run('sample', 'a red bird', '--run', tiny_run/'nope'), 'No run folder')
    one_line_error(run('sample', 'a red bird', '--run', tiny_run/'damsm'), 'DAMSM pre-training run')


def test_sample_without_run_uses_the_shipped_model(tmp_path):
    r = run('sample', 'this bird has a red crown and a blue wing', '--out', tmp_path/'s', '--n', '2')
    assert r.returncode == 0 and 'shipped with attngan' in r.stdout, (r.stdout, r.stderr)
    assert sorted(p.name for p in (tmp_path/'s').glob('*_64px.png')) == ['caption0_sample0_64px.png', 'caption0_sample1_64px.png']


def test_train_errors(tiny_run):
    one_line_error(run('train', '--preset', 'tiny', '--damsm', tiny_run/'nope', '--out', tiny_run/'g2'), 'No DAMSM run folder')
    one_line_error(run('train', '--resume', '--out', tiny_run/'damsm'), 'DAMSM pre-training run')
    one_line_error(run('pretrain-damsm', '--out', tiny_run/'d2', '--minutes', '-1'), '--minutes must be a positive number (got -1.0).')


# ---- every number option is checked: one line on stderr, exit 2, nothing written ----------------------------------

def in_process(capsys, *args):
    "Run `attngan ARGS` in this process: (exit status, stdout, stderr); argparse's own refusals exit too."
    from attngan.cli import main
    try: rc = main([str(a) for a in args])
    except SystemExit as e: rc = e.code
    c = capsys.readouterr()
    return rc, c.out, c.err


def in_process_error(capsys, *args_and_words):
    *args, words = args_and_words
    rc, out, err = in_process(capsys, *args)
    assert rc == 2 and 'Traceback' not in err and err.count('\n') == 1, (args, rc, err)
    assert words in err, (args, err)


@pytest.mark.parametrize('args, words', [
    (['train', '--out', '{d}', '--steps', '0'], 'attngan train: error: --steps must be a positive integer (got 0).'),
    (['train', '--out', '{d}', '--minutes', '-1'], '--minutes must be a positive number (got -1.0).'),
    (['train', '--out', '{d}', '--minutes', 'nan'], '--minutes must be a positive number (got nan).'),
    (['train', '--out', '{d}', '--seed', '-1'], '--seed must be an integer in [0, 2**63) (got -1).'),
    (['train', '--out', '{d}', '--steps', '2.5'], "argument --steps: invalid int value: '2.5'"),
    (['pretrain-damsm', '--out', '{d}', '--epochs', '0'], 'attngan pretrain-damsm: error: --epochs must be a positive integer (got 0).'),
    (['pretrain-damsm', '--out', '{d}', '--minutes', 'inf'], '--minutes must be a positive number (got inf).'),
    (['make-birds', '{d}', '--n', '0'], 'attngan make-birds: error: --n must be a positive integer (got 0).'),
    (['make-birds', '{d}', '--size', '8'], '--size must be an integer >= 16 (got 8).'),
    (['make-birds', '{d}', '--seed', '-3'], '--seed must be an integer in [0, 2**63) (got -3).'),
    (['sample', 'a red bird', '--out', '{d}', '--n', '0'], 'attngan sample: error: --n must be a positive integer (got 0).'),
    (['sample', 'a red bird', '--out', '{d}', '--seed', '-1'], '--seed must be an integer in [0, 2**63) (got -1).'),
    (['bench', '--batch', '1'], 'attngan bench: error: --batch must be an integer >= 2 (got 1).'),
    (['bench', '--threads', '0'], '--threads must be a positive integer (got 0).'),
    (['bench', '--n', '-5'], '--n must be a positive integer (got -5).'),
    (['demo', '--out', '{d}', '--minutes', '0'], 'attngan demo: error: --minutes must be a positive number (got 0.0).'),
])
def test_number_options_are_checked(args, words, tmp_path, capsys):
    d = tmp_path/'out'
    in_process_error(capsys, *[a.format(d=d) for a in args], words)
    assert not d.exists()                                                  # refused before anything was written


def test_a_number_error_from_the_console_script(tmp_path):
    one_line_error(run('train', '--preset', 'tiny', '--out', tmp_path/'r', '--steps', '-3'), '--steps must be a positive integer (got -3).')
    one_line_error(run('train', '--out', tmp_path/'r', '--steps', 'many'), "invalid int value: 'many'")


# ---- --set section.key=value and --amp ------------------------------------------------------------------------------

@pytest.mark.parametrize('value, words', [
    ('model.ngf=8', "Unknown section 'model' in --set model.ngf=8; known ones are data, text, damsm, gan, train."),
    ('gan.ngff=8', "config.gan has no setting 'ngff' (--set gan.ngff=8); known ones are sizes, z_dim, cond_dim, ngf, "),
    ('gan.ngf=eight', "config.gan.ngf must be an integer (got 'eight' in --set gan.ngf=eight)."),
    ('gan.spectral_norm=maybe', "config.gan.spectral_norm must be true or false (or 1/0, yes/no) (got 'maybe' in --set gan.spectral_norm=maybe)."),
    ('gan.sizes=32,48', 'config.gan.sizes must be powers of two >= 8, each double the one before'),
    ('train.batch_size=1', 'config.train.batch_size must be an integer >= 2 (got 1).'),
    ('gan.ngf', '--set takes section.key=value, e.g. gan.ngf=16'),
])
def test_bad_sets_are_one_sentence(value, words, tmp_path, capsys):
    in_process_error(capsys, 'train', '--preset', 'tiny', '--out', tmp_path/'r', '--set', value, words)
    in_process_error(capsys, 'pretrain-damsm', '--preset', 'tiny', '--out', tmp_path/'d', '--set', value, words)
    assert not (tmp_path/'r').exists() and not (tmp_path/'d').exists()


def test_train_sets_and_amp_then_resume(tmp_path, capsys, one_thread):
    from attngan.config import Config
    r = tmp_path/'r'
    rc, out, err = in_process(capsys, 'train', '--preset', 'tiny', '--out', r, '--steps', 1, '--quiet', '--set', 'gan.ngf=6',
                              '--set', 'gan.spectral_norm=yes', '--set', 'train.betas=0.0,0.99', '--amp', 'bf16')
    assert rc == 0, err
    cfg = Config.from_json(r/'config.json')
    assert (cfg.gan.ngf, cfg.gan.spectral_norm, cfg.train.betas, cfg.train.amp) == (6, True, (0.0, 0.99), 'bf16')
    before = (r/'train_state.pt').read_bytes()
    in_process_error(capsys, 'train', '--out', r, '--resume', '--set', 'gan.ngf=8', '--quiet', '(gan.ngf: 6 -> 8)')
    in_process_error(capsys, 'train', '--out', r, '--resume', '--set', 'gan.spectral_norm=false', '--quiet', '(gan.spectral_norm: True -> False)')
    assert (r/'train_state.pt').read_bytes() == before                     # refusals change nothing
    rc, out, err = in_process(capsys, 'train', '--out', r, '--resume', '--steps', 2, '--set', 'gan.ngf=6', '--amp', 'off', '--quiet')
    assert rc == 0, err                                                      # the same setting, and a precision change: fine
    assert 'Trained steps 2-2' in out
    rc, out, err = in_process(capsys, 'train', '--out', r, '--resume', '--steps', 3, '--set', 'train.lr_g=1e-5', '--quiet')
    assert rc == 0 and 'new learning rates (lr_g: 0.0002 -> 1e-05)' in out, err    # a lower rate for the next leg: fine
    assert Config.from_json(r/'config.json').train.lr_g == 1e-5                    # config.json holds the last leg's settings
    assert 'train.lr_g=1e-5' in json.loads((r/'legs.json').read_text())[-1]['command']


def test_generator_shape_follows_the_set(tmp_path, capsys, one_thread):
    "gan.ngf set on the command line is the width of the networks trained, not only a number in config.json."
    import torch
    from attngan.config import tiny
    from attngan.core import Generator
    r = tmp_path/'r'
    rc, out, err = in_process(capsys, 'train', '--preset', 'tiny', '--out', r, '--steps', 1, '--quiet', '--set', 'gan.ngf=6')
    assert rc == 0, err
    c = tiny(); c.gan.ngf = 6
    want = {k: v.shape for k, v in Generator(c).state_dict().items()}
    assert {k: v.shape for k, v in torch.load(r/'generator.pt', weights_only=True).items()} == want
    c.gan.ngf = 4
    assert want != {k: v.shape for k, v in Generator(c).state_dict().items()}


def test_grow_a_packaged_model_into_three_stages(tiny_run, tmp_path, capsys, one_thread):
    "`attngan train --init-from MODEL`: a packaged two-stage model (half precision, discriminators.pt) grown by a stage."
    from attngan.sample import package_model
    model = package_model(tiny_run/'gan', tmp_path/'model')                      # what ship_model.py ships
    r, args = tmp_path/'grown', ['--preset', 'tiny', '--set', 'gan.sizes=16,32,64', '--steps', 1, '--quiet']
    rc, out, err = in_process(capsys, 'train', '--out', r, '--init-from', model, *args)
    assert rc == 0, err
    assert 'init from' in out and 'stages and their discriminators loaded; new: 64 px' in out, out
    st, g0 = torch.load(r/'train_state.pt', weights_only=True), torch.load(model/'generator.pt', weights_only=True)
    assert len(st['Ds']) == 3 and set(g0) < set(st['G']) and any(k.startswith('next_stages.1.') for k in st['G'])
    assert (r/'damsm.pt').is_file() and 'init-from' in json.loads((r/'legs.json').read_text())[0]['command']
    rc, out, err = in_process(capsys, 'train', '--out', r, '--resume', '--steps', 2, '--quiet')
    assert rc == 0 and 'Trained steps 2-2' in out, err
    rc, out, err = in_process(capsys, 'train', '--out', tmp_path/'copied', '--init-from', model, '--new-stages', 'copy', *args)
    assert rc == 0 and '(copies of its 32 px stage)' in out, err
    assert '--new-stages copy' in json.loads((tmp_path/'copied'/'legs.json').read_text())[0]['command']
    in_process_error(capsys, 'train', '--out', tmp_path/'g1', '--new-stages', 'copy', *args, 'it needs --init-from MODEL')
    in_process_error(capsys, 'train', '--out', tmp_path/'g2', '--init-from', model, '--preset', 'tiny', '--set', 'gan.sizes=32,64',
                     '--steps', 1, '--quiet', 'do not begin with them')
    in_process_error(capsys, 'train', '--out', tmp_path/'g3', '--init-from', tmp_path/'nowhere', *args, 'no such folder')
    in_process_error(capsys, 'train', '--out', tmp_path/'g4', '--init-from', tiny_run/'damsm', *args, 'holds no generator.pt')
    in_process_error(capsys, 'train', '--out', tmp_path/'g5', '--init-from', model, '--set', 'damsm.gamma3=5', *args, 'drop that --set')
    assert not (tmp_path/'g2').exists() or not (tmp_path/'g2'/'train_state.pt').exists()   # refusals write no run


def test_pretrain_damsm_set_then_resume(tmp_path, capsys, one_thread):
    from attngan.config import Config
    d = tmp_path/'d'
    rc, out, err = in_process(capsys, 'pretrain-damsm', '--preset', 'tiny', '--out', d, '--epochs', 1, '--quiet',
                              '--set', 'damsm.batch_size=6')
    assert rc == 0, err
    assert Config.from_json(d/'config.json').damsm.batch_size == 6 and '8 steps' in out    # 48 training images / 6
    in_process_error(capsys, 'pretrain-damsm', '--preset', 'tiny', '--out', d, '--epochs', 2, '--resume', '--quiet',
                     '--set', 'damsm.batch_size=8', '(damsm.batch_size: 6 -> 8)')
    in_process_error(capsys, 'train', '--preset', 'tiny', '--damsm', d, '--out', tmp_path/'g', '--set', 'text.hidden_dim=6',
                     'drop that --set')


# ---- attngan ablate -------------------------------------------------------------------------------------------------

def test_ablate_two_rows_prints_the_table(tmp_path, capsys, monkeypatch):
    "`attngan ablate` on two rows with stand-ins for training and evaluation (the real ones take minutes a row)."
    import json
    import attngan.ablation as A
    calls, real = [], A.run_ablation
    def fake_train(cfg, folder, damsm, minutes, resume, log):
        calls.append((Path(folder).name, cfg.gan.spectral_norm, cfg.train.seed, minutes, resume))
        Path(folder).mkdir(parents=True, exist_ok=True)
    def fake_eval(folder, log):
        acc = 0.7 if 'spectral' in str(folder) else 0.4 + 0.1 * str(folder).endswith('seed1')
        return dict(attribute_accuracy=dict(generated=acc, real=0.9, floor=0.1), fid_evaluator=dict(generated=30.0, real=1.0, floor=80.0))
    monkeypatch.setattr(A, 'run_ablation', lambda *a, damsm=None, **k: real(*a, damsm='unused', train_fn=fake_train, eval_fn=fake_eval, log=lambda *_: None, **k))
    args = ['ablate', '--out', tmp_path/'abl', '--minutes', '2', '--rows', 'baseline,spectral norm', '--seeds', '0', '--baseline-seeds', '0,1']
    rc, out, err = in_process(capsys, *args)
    assert rc == 0, err
    assert calls == [('baseline_seed0', False, 0, 2.0, False), ('baseline_seed1', False, 1, 2.0, False), ('spectral-norm_seed0', True, 0, 2.0, False)]
    lines = out.strip().splitlines()
    assert lines[0] == '| row | attribute acc. | FID (lower better) | steps | preemptions/s |'   # how far each run got, and its CPU
    row = {l.split(' | ')[0]: l for l in lines}
    assert row['| baseline (2 seeds)'].startswith('| baseline (2 seeds) | 0.45 ± 0.05 | 30 ± 0 | 0 | ')
    assert row['| spectral norm'].startswith('| spectral norm | 0.7 | 30 | 0 | ')
    assert '| *real images* | 0.9 | 1 | - | - |' in lines and '| *floor* | 0.1 | 80 | - | - |' in lines
    assert json.loads((tmp_path/'abl'/'spectral-norm_seed0'/'eval'/'metrics.json').read_text())['attribute_accuracy']['generated'] == 0.7
    calls.clear()                                                          # a second call reads the saved metrics back
    rc, out2, _ = in_process(capsys, *args)
    assert rc == 0 and calls == [] and out2 == out


@pytest.mark.parametrize('args, words', [
    (['--minutes', '0'], 'attngan ablate: error: --minutes must be a positive number (got 0.0).'),
    (['--seeds', '0,-1'], '--seeds must be an integer in [0, 2**63) (got -1).'),
    (['--baseline-seeds', '0,x'], "argument --baseline-seeds: expected comma-separated integers such as 0,1 (got '0,x')"),
    (['--rows', 'baseline,spectal norm'], "--rows: unknown row 'spectal norm'; choose from baseline, spectral norm,"),
    (['--screen', 'shipped', '--rows', 'spectral norm'], "--rows: unknown row 'spectral norm'; choose from baseline, DAMSM every stage, wide generator, DAMSM weight 20, DAMSM 40 epochs."),
    (['--screen', 'paper'], "argument --screen: invalid choice: 'paper'"),
    (['--damsm', 'nowhere'], "No DAMSM run folder at nowhere; pass the --out folder of `attngan pretrain-damsm`."),
])
def test_ablate_errors_are_one_sentence(args, words, tmp_path, capsys):
    in_process_error(capsys, 'ablate', '--out', tmp_path/'abl', *args, words)
    assert not (tmp_path/'abl').exists()


# ---- the pretrained text encoder (text.encoder=minilm) --------------------------------------------------------------

def test_pretrained_text_encoder_end_to_end(tmp_path):
    "pretrain-damsm -> train -> sample with the frozen all-MiniLM-L6-v2: the checkpoints hold only its two maps, and the saved DAMSM gives the trainer's word features again."
    import torch
    from attngan.options import PretrainedTextEncoder
    from attngan.pretrain import load_damsm
    d = tmp_path
    r = run('pretrain-damsm', '--preset', 'tiny', '--out', d/'damsm', '--epochs', 1, '--quiet', '--set', 'text.encoder=minilm')
    assert r.returncode == 0, r.stderr
    keys = set(torch.load(d/'damsm'/'damsm.pt', weights_only=True)['text_encoder'])
    assert keys == {'word_proj.weight', 'word_proj.bias', 'sent_proj.weight', 'sent_proj.bias'}, keys
    r = run('train', '--preset', 'tiny', '--damsm', d/'damsm', '--out', d/'gan', '--steps', 2, '--quiet')
    assert r.returncode == 0, r.stderr
    te, _, cfg, vocab = load_damsm(d/'gan')                       # the GAN run keeps the DAMSM it trained with
    assert isinstance(te, PretrainedTextEncoder) and cfg.text.encoder == 'minilm'
    te0 = load_damsm(d/'damsm')[0]
    caps, lens = torch.tensor([[vocab.stoi.get(w, 2) for w in 'this bird has a red crown'.split()]]), torch.tensor([6])
    torch.testing.assert_close(te(caps, lens), te0(caps, lens))
    r = run('sample', 'this bird has a red crown and a white belly', '--run', d/'gan', '--out', d/'s', '--n', 1)
    assert r.returncode == 0, r.stderr
    assert len(list((d/'s').glob('*px.png'))) == 2


def test_bench_iteration_table_and_device(capsys):
    "`bench --parts iteration` prints the phase table with FLOPs and the fraction of the peak; a device it cannot use is one sentence."
    rc, out, err = in_process(capsys, 'bench', '--preset', 'tiny', '--parts', 'iteration', '--threads', '1')
    assert rc == 0, err
    assert 'training iteration' in out and 'matmul peak' in out and 'of peak' in out
    for phase in ('G forward', 'D0 step', 'G loss: DAMSM', 'G backward', 'iteration'): assert phase in out, phase
    if not torch.cuda.is_available():
        rc, out, err = in_process(capsys, 'bench', '--preset', 'tiny', '--parts', 'iteration', '--device', 'cuda')
        assert rc != 0 and 'Traceback' not in err and 'no CUDA GPU is visible to torch here' in err, err
    rc, out, err = in_process(capsys, 'bench', '--preset', 'tiny', '--parts', 'iteration', '--device', 'tpu')
    assert rc != 0 and 'Traceback' not in err and "Unknown device 'tpu'" in err, err
