"""The generator's options beyond the paper (library/options, "Generator"): every combination builds and trains, each is kept in config.json,
and a checkpoint loads into the generator its config.json describes."""
import dataclasses, itertools, json
import pytest, torch
from attngan.config import Config, InvalidInput, tiny, demo
from attngan.core import Generator, NextStage, ResBlock
from attngan.options import SubPixelUp, DenseBlock, ChannelWordAttention

pytestmark = pytest.mark.usefixtures('one_thread')   # conftest.py

OLD = dict(noise_every_stage=(False, True), sentence_to_refine=(False, True), share_refine=(False, True))
NEW = dict(upsample=('nearest', 'pixelshuffle'), refine_block=('residual', 'dense'), channel_attention=(False, True))
ALL = {**OLD, **NEW}
COMBOS = [dict(zip(ALL, v)) for v in itertools.product(*ALL.values())]
NEW_COMBOS = [dict(zip(NEW, v)) for v in itertools.product(*NEW.values())]


def tiny3() -> Config:
    "tiny() with three stages (16, 32, 64): two refinement stages, so sharing and per-size layers are exercised."
    c = tiny(); c.gan.sizes = (16, 32, 64); return c


PRESETS = dict(tiny=tiny, demo=demo, tiny3=tiny3)


def with_options(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, **kw))


def combo_id(kw: dict) -> str:
    on = [k if v is True else str(v) for k, v in kw.items() if v not in (False, 'nearest', 'residual')]
    return '+'.join(on) or 'paper'


def inputs(cfg: Config, B: int = 2, T: int = 5, seed: int = 0) -> dict:
    "Random text standing in for the text encoder: caption 1 is 3 words padded to T, its padding loud."
    g = torch.Generator().manual_seed(seed)
    D = cfg.text.feat_dim
    mask = torch.arange(T)[None] < torch.tensor([T] + [3] * (B - 1))[:, None]
    words = torch.where(mask[:, None], torch.randn(B, D, T, generator=g), 10 * torch.randn(B, D, T, generator=g))
    return dict(z=torch.randn(B, cfg.gan.z_dim, generator=g), sent=torch.randn(B, D, generator=g), words=words, mask=mask,
                eps=torch.randn(B, cfg.gan.cond_dim, generator=g))


def noise(cfg: Config, G: Generator, B: int = 2, seed: int = 1):
    if not cfg.gan.noise_every_stage: return None
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, cfg.gan.z_dim, generator=g) for _ in G.next_stages]


@pytest.mark.parametrize('preset', list(PRESETS))
@pytest.mark.parametrize('kw', COMBOS, ids=combo_id)
def test_every_combination_trains(preset, kw):
    cfg = with_options(PRESETS[preset](), **kw).validate()
    torch.manual_seed(0)
    G = Generator(cfg).train()
    x = inputs(cfg)
    out = G(**x, noise=noise(cfg, G))
    sizes = cfg.gan.sizes
    assert [tuple(im.shape) for im in out.images] == [(2, 3, s, s) for s in sizes]
    assert [tuple(a.shape) for a in out.attention] == [(2, 5, s, s) for s in sizes[:-1]]
    loss = sum(im.square().mean() for im in out.images)
    loss.backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in G.parameters())
    # each option built what it names, in every refinement stage
    for st in G.next_stages:
        assert isinstance(st.up, SubPixelUp) == (kw['upsample'] == 'pixelshuffle')
        assert all(isinstance(b, DenseBlock if kw['refine_block'] == 'dense' else ResBlock) for b in st.residual)
        assert len(st.residual) == cfg.gan.n_res
        assert isinstance(st.channel_attention, ChannelWordAttention) == kw['channel_attention']
    n = len(sizes) - 1
    assert (len({id(s) for s in G.next_stages}) == 1) == (kw['share_refine'] or n == 1)
    if kw['channel_attention']:
        served = sorted(int(s) for st in {id(s): s for s in G.next_stages}.values() for s in st.channel_attention.proj)
        assert served == sorted(sizes[:-1])                     # one perception layer per refined size, shared or not


@pytest.mark.parametrize('kw', COMBOS, ids=combo_id)
def test_padding_and_batch_independence(kw):
    "Eval mode: padding words get zero weight in both attentions, and sample 1 alone (cut to its 3 words) = inside the batch."
    cfg = with_options(tiny3(), **kw)
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    x = inputs(cfg)
    nz = noise(cfg, G)
    weights = []
    hooks = [s.channel_attention.register_forward_hook(lambda m, i, o: weights.append(o[1]))
             for s in {id(s): s for s in G.next_stages}.values() if s.channel_attention is not None]   # a shared stage once
    with torch.no_grad():
        batch = G(**x, noise=nz)
        alone = G(x['z'][1:2], x['sent'][1:2], x['words'][1:2, :, :3], x['mask'][1:2, :3], eps=x['eps'][1:2],
                  noise=None if nz is None else [v[1:2] for v in nz])
    for h in hooks: h.remove()
    pad = ~x['mask']
    for a in batch.attention: assert a[pad].abs().max().item() == 0
    if kw['channel_attention']:
        assert len(weights) == 2 * len(G.next_stages)           # batch run, then alone run
        for a in weights[:len(G.next_stages)]: assert a.transpose(1, 2)[pad].abs().max().item() == 0
    for a, b in zip(alone.images, batch.images): torch.testing.assert_close(a, b[1:2], atol=1e-5, rtol=1e-4)
    for a, b in zip(alone.attention, batch.attention): torch.testing.assert_close(a, b[1:2, :3], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('share', [False, True], ids=['separate', 'shared'])
@pytest.mark.parametrize('kw', NEW_COMBOS, ids=combo_id)
def test_options_round_trip_config_json_and_state_dict(tmp_path, kw, share):
    cfg = with_options(tiny3(), share_refine=share, **kw)
    cfg.to_json(tmp_path/'config.json')
    saved = json.loads((tmp_path/'config.json').read_text())['gan']
    assert {k: saved[k] for k in kw} == kw and saved['share_refine'] == share
    back = Config.from_json(tmp_path/'config.json')
    assert back == cfg
    torch.manual_seed(0)
    G = Generator(cfg)
    G(**inputs(cfg))                                           # one train-mode pass: BatchNorm statistics move off their start
    torch.save(G.state_dict(), tmp_path/'generator.pt')
    torch.manual_seed(1)                                       # other initial weights, overwritten by the checkpoint
    G2 = Generator(back)
    G2.load_state_dict(torch.load(tmp_path/'generator.pt', weights_only=True))   # strict: same names and shapes
    G.eval(); G2.eval()
    x = inputs(cfg, seed=3)
    with torch.no_grad(): a, b = G(**x), G2(**x)
    for u, v in zip(a.images, b.images): assert torch.equal(u, v)


@pytest.mark.parametrize('name', list(NEW))
def test_checkpoint_needs_its_own_options(name):
    "A state dict written with one newer option on does not load into the default generator, nor the other way round."
    on = dict(upsample='pixelshuffle', refine_block='dense', channel_attention=True)[name]
    a, b = Generator(tiny()), Generator(with_options(tiny(), **{name: on}))
    with pytest.raises(RuntimeError): a.load_state_dict(b.state_dict())
    with pytest.raises(RuntimeError): b.load_state_dict(a.state_dict())


def test_default_generator_is_the_papers():
    "With every option off, the parameters are the paper's stage, by name and shape, in this order (nothing added)."
    G = Generator(tiny())
    assert [(n, tuple(p.shape)) for n, p in G.named_parameters()] == [
        ('ca.fc.0.weight', (32, 16)), ('ca.fc.0.bias', (32,)), ('init_stage.fc.0.weight', (512, 16)),
        ('init_stage.fc.1.weight', (512,)), ('init_stage.fc.1.bias', (512,)), ('init_stage.ups.0.1.weight', (16, 16, 3, 3)),
        ('init_stage.ups.0.2.weight', (16,)), ('init_stage.ups.0.2.bias', (16,)), ('init_stage.ups.1.1.weight', (8, 8, 3, 3)),
        ('init_stage.ups.1.2.weight', (8,)), ('init_stage.ups.1.2.bias', (8,)), ('next_stages.0.attention.proj.weight', (4, 16, 1)),
        ('next_stages.0.residual.0.body.0.weight', (16, 8, 3, 3)), ('next_stages.0.residual.0.body.1.weight', (16,)),
        ('next_stages.0.residual.0.body.1.bias', (16,)), ('next_stages.0.residual.0.body.3.weight', (8, 8, 3, 3)),
        ('next_stages.0.residual.0.body.4.weight', (8,)), ('next_stages.0.residual.0.body.4.bias', (8,)),
        ('next_stages.0.up.1.weight', (8, 8, 3, 3)), ('next_stages.0.up.2.weight', (8,)), ('next_stages.0.up.2.bias', (8,)),
        ('to_images.0.conv.weight', (3, 4, 3, 3)), ('to_images.1.conv.weight', (3, 4, 3, 3))]
    assert G.next_stages[0].channel_attention is None


def test_default_options_build_the_same_weights():
    "Passing the defaults to NextStage explicitly draws the same weights from the same seed as leaving them out."
    torch.manual_seed(0); a = NextStage(4, 16, 1)
    torch.manual_seed(0); b = NextStage(4, 16, 1, 0, 'nearest', 'residual', ())
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize('kw, match', [(dict(upsample='bilinear'), 'upsample must be one of'),
                                       (dict(block='rdb'), 'block must be one of')])
def test_unknown_block_names_get_one_sentence(kw, match):
    with pytest.raises(InvalidInput, match=match) as e: NextStage(4, 16, 1, **kw)
    assert '\n' not in str(e.value)


def test_training_run_writes_and_reloads_the_options(tmp_path):
    "A short train() with all newer options (and sharing) writes them to config.json; the sampler rebuilds that generator."
    from attngan.runs import train
    from attngan.sample import Text2Image
    cfg = with_options(tiny3(), upsample='pixelshuffle', refine_block='dense', channel_attention=True, share_refine=True)
    cfg.train.ckpt_every = cfg.train.sample_every = 2
    run = tmp_path/'run'
    train(cfg, run, steps=2, progress=False, log=lambda *a, **k: None)
    gan = json.loads((run/'config.json').read_text())['gan']
    assert (gan['upsample'], gan['refine_block'], gan['channel_attention'], gan['share_refine']) == ('pixelshuffle', 'dense', True, True)
    pipe = Text2Image.from_checkpoint(run)
    G = pipe.G
    st = G.next_stages[0]
    assert isinstance(st.up, SubPixelUp) and isinstance(st.residual[0], DenseBlock) and list(st.channel_attention.proj) == ['16', '32']
    saved = torch.load(run/'generator.pt', weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in G.state_dict().items())
    res = pipe(['a bird with a red crown'], seed=0)
    assert res.images[-1].shape[-1] == 64
