"""Two CPU processes under torchrun (gloo) train tiny(): both ranks hold the same weights, those match one process
that computes the two shares of each global batch itself, and the run resumes under torchrun."""
import itertools, os, socket, subprocess, sys
import torch

# `attngan train` as torchrun starts it, except that every rank also writes the parameters it ends with to $DUMP
SCRIPT = """import os, sys, torch
import attngan.train as T, attngan.runs as R
real_train = R.train
def train_and_dump(*a, **k):
    st = real_train(*a, **k)
    params = lambda m: {n: p.detach().clone() for n, p in m.named_parameters()}
    torch.save(dict(step=st.step, G=params(T.bare(st.G)), G_ema=params(st.G_ema), Ds=params(st.Ds),
                    WD=params(R.word_term(st).WD) if R.word_term(st) is not None else {}),
               os.path.join(os.environ['DUMP'], f"rank{os.environ['RANK']}_step{st.step}.pt"))
    return st
R.train = train_and_dump
sys.exit(R.main_train(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def torchrun(tmp_path, *args, n=2):
    script = tmp_path/'train_entry.py'
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', DUMP=str(tmp_path))
    cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={n}', '--nnodes=1',
           '--master_addr=127.0.0.1', f'--master_port={free_port()}', str(script), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=200, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def load(p): return torch.load(p, map_location='cpu', weights_only=True)


def one_process_reference(run, at_steps, world=2):
    """What two processes should compute, in one process and without DDP: each step takes the single-process
    global batch of world x batch_size samples, cuts it into the ranks' shares, and averages the shares'
    gradients by hand (each share with its own BatchNorm statistics, DAMSM negatives and noise, as a rank has)."""
    import attngan.train as T, attngan.runs as R
    from attngan.config import Config
    from attngan.pretrain import load_damsm
    from attngan.data import collate
    from attngan.core import kl_loss
    from attngan.damsm import damsm_loss
    from attngan.discriminators import discriminator_loss, generator_adv_loss
    cfg = Config.from_json(run/'config.json')
    te, ie, _, vocab = load_damsm(run)
    _, ds = R.run_data(cfg, 'synth', vocab)
    st = T.build_state(cfg, vocab, te, ie)                      # the initial weights every rank starts from
    B, data = cfg.train.batch_size, R.SeededSamples(ds)
    sampler = R.EpochBatchSampler(len(ds), ds.n_caps, world * B, cfg.train.seed)   # one process, the global batch
    out, step = {}, 0
    for epoch in itertools.count():
        for keys in sampler.epoch_keys(epoch):
            shares = [collate([data[k] for k in keys[r * B:(r + 1) * B]]) for r in range(world)]
            with torch.no_grad(): text = [te(b['captions'], b['lengths']) for b in shares]
            noise = [T.draw_noise(cfg, B, T.mix_seed(cfg.train.seed, 2, r, step)) for r in range(world)]
            fakes = [st.G(nz['z'], s, w, b['mask'], eps=nz['eps'], noise=nz['noise']) for b, (w, s), nz in zip(shares, text, noise)]
            for i, (D, opt) in enumerate(zip(st.Ds, st.opt_ds)):
                opt.zero_grad()
                for b, (w, s), f in zip(shares, text, fakes): (discriminator_loss(D, b['images'][i], f.images[i].detach(), s) / world).backward()
                opt.step()
            st.Ds.requires_grad_(False); st.opt_g.zero_grad()
            for b, (w, s), f in zip(shares, text, fakes):
                adv = sum(generator_adv_loss(D, img, s) for D, img in zip(st.Ds, f.images))
                regions, glob = ie(f.images[-1])
                loss = (adv + cfg.gan.lambda_damsm * damsm_loss(regions, glob, w, s, b['mask'], b['class_ids'], cfg).loss
                        + cfg.gan.kl_weight * kl_loss(f.mu, f.logvar))
                (loss / world).backward()
            st.opt_g.step(); st.Ds.requires_grad_(True)
            T.ema_update(st.G_ema, st.G, T.ema_decay(cfg.train.ema, step))
            step += 1
            if step in at_steps:
                params = lambda m: {n: p.detach().clone() for n, p in m.named_parameters()}
                out[step] = dict(G=params(st.G), G_ema=params(st.G_ema), Ds=params(st.Ds))
            if step == max(at_steps): return out


def same(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def close(a, b, atol=1e-5):
    return a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= atol


def test_two_processes_train_and_resume(tmp_path):
    run = tmp_path/'run'
    r = torchrun(tmp_path, '--data', 'synth', '--out', str(run), '--preset', 'tiny', '--steps', '3', '--quiet')
    st = load(run/'train_state.pt')
    assert st['step'] == 3 and len(st['history']) == 3 and st['world'] == 2
    assert r.stdout.count('Trained steps 1-3') == 1                        # only rank 0 talks
    assert sorted(p.name for p in (run/'samples').glob('step_*.png')) == ['step_000000.png', 'step_000002.png', 'step_000003.png']
    # 2 processes x batch 4 = 8 images per step: tiny()'s 48 training birds make 6 steps per epoch; resume across epochs
    torchrun(tmp_path, '--out', str(run), '--steps', '7', '--resume', '--quiet')
    st = load(run/'train_state.pt')
    assert (st['step'], st['epoch'], st['batch']) == (7, 1, 1)
    dumps = {(r, s): load(tmp_path/f'rank{r}_step{s}.pt') for r in (0, 1) for s in (3, 7)}
    for s in (3, 7):                                                        # the ranks agree, bit for bit
        for part in ('G', 'G_ema', 'Ds'): assert same(dumps[0, s][part], dumps[1, s][part]), (s, part)
    assert same(dumps[0, 7]['G'], {k: v for k, v in st['G'].items() if k in dumps[0, 7]['G']})   # rank 0 saved them
    ref = one_process_reference(run, {3, 7})
    for s in (3, 7):                                                        # and match one process with the same global batch
        for part in ('G', 'G_ema', 'Ds'): assert close(dumps[0, s][part], ref[s][part]), (s, part)
    assert not close(dumps[0, 3]['G'], ref[7]['G'])                         # (the tolerance tells steps apart)
    # one process continues the two-process run from the same place in the epoch (batch 1 of 8 images = batch 2 of 4)
    from attngan.runs import train
    lines = []
    st = train(None, run, steps=8, resume=True, progress=False, log=lines.append)
    assert (st.step, st.epoch, st.batch) == (8, 1, 3) and any('instead of 2' in l for l in lines)


def test_two_processes_with_ma_gp_and_word_disc(tmp_path):
    """The MA-GP differentiates inside the DDP-wrapped D loss (autograd.grad with create_graph) and the word D has
    its own DDP wrapper: two ranks, each on its own share of the batch, still end with the same weights, bit for bit,
    and those weights moved (so the gradients were averaged, not skipped)."""
    run = tmp_path/'run'
    torchrun(tmp_path, '--data', 'synth', '--out', str(run), '--preset', 'tiny', '--steps', '2', '--quiet',
             '--set', 'gan.ma_gp=2', '--set', 'gan.word_disc=1', '--set', 'gan.perceptual=1')
    st = load(run/'train_state.pt')
    h = st['history'][-1]
    assert {'GP', 'WD', 'G_word', 'G_perc'} <= set(h) and h['GP'] > 0
    d0, d1 = (load(tmp_path/f'rank{r}_step2.pt') for r in (0, 1))
    for part in ('G', 'G_ema', 'Ds', 'WD'): assert d0[part] and same(d0[part], d1[part]), part
    from attngan.config import Config
    from attngan.options import build_word_discriminator
    fresh = build_word_discriminator(Config.from_json(run/'config.json'))
    assert not torch.equal(d0['WD']['proj.weight'], fresh.proj.weight.detach())   # the word D trained
