"""The discriminator options beyond the paper (library/options, "Discriminators"): spectral normalisation,
hinge loss + matching-aware gradient penalty, ControlGAN's word-level discriminator.

Each option changes what it should; with every option off the discriminators and their losses are what they were
before the options existed, bit for bit; every combination builds and runs a D step and a G step on tiny()."""
import itertools, math
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrize import is_parametrized

from attngan.config import tiny, InvalidInput, UserError
from attngan.core import Generator, n_params
from attngan.damsm import image_encoder
from attngan.discriminators import (Discriminator, build_discriminators, discriminator_loss, generator_adv_loss,
                                    d_loss_for, g_adv_loss_for, _adv_term, adv_terms, BCETerms)
from attngan.options import (HingeTerms, ma_gradient_penalty, WordDiscriminator,
                             build_word_discriminator, word_d_loss, word_g_loss)


def cfg_with(**gan):
    c = tiny()
    for k, v in gan.items(): setattr(c.gan, k, v)
    return c


def batch(size, B=4, D=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 3, size, size, generator=g), torch.randn(B, 3, size, size, generator=g),
            torch.randn(B, D, generator=g))


# ---------------------------------------------------------------- defaults unchanged, bit for bit

def old_discriminator_loss(D, real, fake, sent, shift=1):
    "The D loss as the code computed it before the options existed (commit 7aa1984), term for term, in its order."
    bce = lambda x, y: F.binary_cross_entropy_with_logits(x, torch.full_like(x, y))
    wrong = sent.roll(shift, 0)
    h_real, h_fake = D.encode(real), D.encode(fake.detach())
    t = [bce(D.uncond_logits(h_real), 1.), bce(D.cond_logits(h_real, sent), 1.), bce(D.uncond_logits(h_fake), 0.),
         bce(D.cond_logits(h_fake, sent), 0.), bce(D.cond_logits(h_real, wrong), 0.)]
    return (t[0] + t[1]) / 2 + (t[2] + t[3] + t[4]) / 3


def old_generator_adv_loss(D, fake, sent):
    h = D.encode(fake)
    bce = lambda x: F.binary_cross_entropy_with_logits(x, torch.ones_like(x))
    return bce(D.uncond_logits(h)) + bce(D.cond_logits(h, sent))


def test_default_build_matches_the_earlier_code():
    "Fingerprints of tiny()'s discriminators and losses under manual_seed(0), measured with the code before the options."
    torch.manual_seed(0)
    Ds = build_discriminators(tiny())
    total = sum(v.double().abs().sum().item() for v in Ds.state_dict().values() if v.is_floating_point())
    assert total == pytest.approx(757.6128376613328, rel=1e-6)
    assert not any(is_parametrized(m) for m in Ds.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in Ds.modules()) == 5   # D16: 1 + join, D32: 2 + join
    g = torch.Generator().manual_seed(1)
    want = [(1.4950644969940186, 1.2186429500579834), (1.684112787246704, 1.0634546279907227)]
    for D, (d_ref, g_ref) in zip(Ds, want):
        real, fake = torch.randn(4, 3, D.size, D.size, generator=g), torch.randn(4, 3, D.size, D.size, generator=g)
        sent = torch.randn(4, 16, generator=g)
        assert discriminator_loss(D, real, fake, sent).item() == pytest.approx(d_ref, rel=1e-5)
        assert generator_adv_loss(D, fake, sent).item() == pytest.approx(g_ref, rel=1e-5)


def test_default_losses_bit_for_bit_with_the_earlier_formula():
    "Loss, D's gradients and BatchNorm's running statistics (which depend on the order of D's calls) all identical."
    for size in (16, 32):
        torch.manual_seed(0); D1 = Discriminator(size, 4, 16)
        torch.manual_seed(0); D2 = Discriminator(size, 4, 16, spectral_norm=False)
        for (k, a), b in zip(D1.state_dict().items(), D2.state_dict().values()): assert torch.equal(a, b), k
        real, fake, sent = batch(size)
        l1, l2 = d_loss_for(tiny())(D1, real, fake, sent), old_discriminator_loss(D2, real, fake, sent)
        assert torch.equal(l1, l2)
        l1.backward(); l2.backward()
        for (n, p), q in zip(D1.named_parameters(), D2.parameters()): assert torch.equal(p.grad, q.grad), n
        for (n, a), b in zip(D1.state_dict().items(), D2.state_dict().values()): assert torch.equal(a, b), n
        assert torch.equal(g_adv_loss_for(tiny())(D1, fake, sent), old_generator_adv_loss(D2, fake, sent))


def test_selectors_return_the_paper_functions_by_default():
    assert d_loss_for(tiny()) is discriminator_loss
    assert g_adv_loss_for(tiny()) is generator_adv_loss
    assert build_word_discriminator(tiny()) is None


# ---------------------------------------------------------------- spectral normalisation

def test_spectral_norm_recipe():
    "TISE's AttnGAN++: SN on the encoder and join convolutions, plain logit heads, no BatchNorm, biases instead."
    Ds = build_discriminators(cfg_with(spectral_norm=True))
    for D in Ds:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
        assert not is_parametrized(D.uncond_head) and not is_parametrized(D.cond_head)
        inner = [m for m in list(D.encoder.modules()) + list(D.cond_join.modules()) if isinstance(m, nn.Conv2d)]
        assert inner and all(is_parametrized(m, 'weight') and m.bias is not None for m in inner)


def test_spectral_norm_normalises():
    "After a few power iterations (one per train-mode forward) every normalised weight has spectral norm 1."
    torch.manual_seed(0)
    D = Discriminator(32, 4, 16, spectral_norm=True)
    layers = [m for m in D.modules() if is_parametrized(m)]
    with torch.no_grad():
        for m in layers: m.parametrizations.weight.original.normal_()
    sigma = lambda W: torch.linalg.matrix_norm(W.detach().flatten(1), 2).item()
    assert all(sigma(m.parametrizations.weight.original) > 3 for m in layers)
    real, _, sent = batch(32)
    for _ in range(30): D(real, sent)
    for m in layers: assert sigma(m.weight) == pytest.approx(1.0, abs=1e-3)


def test_spectral_norm_state_dict_round_trip():
    torch.manual_seed(0)
    D = Discriminator(16, 4, 16, spectral_norm=True)
    real, _, sent = batch(16)
    for _ in range(3): D(real, sent)                               # move u, v away from their initial values
    D2 = Discriminator(16, 4, 16, spectral_norm=True)
    D2.load_state_dict(D.state_dict())
    D.eval(); D2.eval()
    with torch.no_grad():
        for a, b in zip(D(real, sent), D2(real, sent)): assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match='Missing key'): Discriminator(16, 4, 16).load_state_dict(D.state_dict())


def test_spectral_norm_parameter_count():
    "Same conv weights; each BatchNorm (2C) traded for a conv bias (C), also on the first conv."
    for size in (16, 32):
        plain, sn = Discriminator(size, 4, 16), Discriminator(size, 4, 16, spectral_norm=True)
        bn = sum(m.weight.numel() * 2 for m in plain.modules() if isinstance(m, nn.BatchNorm2d))
        bias = sum(m.out_channels for m in sn.modules() if is_parametrized(m))
        assert n_params(sn) == n_params(plain) - bn + bias


# ---------------------------------------------------------------- hinge loss

def test_hinge_terms_by_hand():
    x = torch.tensor([-2., -0.5, 0.5, 3.])
    assert _adv_term(x, True, 'hinge').item() == pytest.approx(5 / 4)     # relu(1 - x) = 3, 1.5, .5, 0
    assert _adv_term(x, False, 'hinge').item() == pytest.approx(6 / 4)    # relu(1 + x) = 0, .5, 1.5, 4
    with pytest.raises(InvalidInput): _adv_term(x, True, 'wgan')
    assert issubclass(InvalidInput, UserError)


def test_hinge_losses_against_the_logits():
    torch.manual_seed(0)
    D = Discriminator(32, 4, 16).eval()
    real, fake, sent = batch(32, B=5)
    with torch.no_grad():
        (ur, cr), (uf, cf), (_, cw) = D(real, sent), D(fake, sent), D(real, sent.roll(1, 0))
        h = lambda x: x.clamp_min(0).mean()
        want = (h(1 - ur) + h(1 - cr)) / 2 + (h(1 + uf) + h(1 + cf) + h(1 + cw)) / 3
        assert discriminator_loss(D, real, fake, sent, kind='hinge').item() == pytest.approx(want.item(), abs=1e-6)
        assert d_loss_for(cfg_with(gan_loss='hinge'))(D, real, fake, sent).item() == pytest.approx(want.item(), abs=1e-6)
        assert generator_adv_loss(D, fake, sent, kind='hinge').item() == pytest.approx((-uf.mean() - cf.mean()).item(), abs=1e-6)
        assert g_adv_loss_for(cfg_with(gan_loss='hinge'))(D, fake, sent).item() == pytest.approx((-uf.mean() - cf.mean()).item(), abs=1e-6)


# ---------------------------------------------------------------- matching-aware gradient penalty

class LinearD(nn.Module):
    "D(x, s) = a.x + b.s, gradient (a, b) for every sample."
    def __init__(self, a, b): super().__init__(); self.a, self.b = nn.Parameter(a), nn.Parameter(b)
    def encode(self, x): return x
    def cond_logits(self, h, s): return h.flatten(1) @ self.a + s @ self.b


@pytest.mark.parametrize('k,p', [(2., 6.), (1., 2.), (3., 1.5)])
def test_ma_gp_closed_form(k, p):
    torch.manual_seed(0)
    lin = LinearD(0.1 * torch.randn(3 * 8 * 8), 0.2 * torch.randn(16))
    n2 = lin.a.detach().pow(2).sum() + lin.b.detach().pow(2).sum()
    gp = ma_gradient_penalty(lin, torch.randn(4, 3, 8, 8), torch.randn(4, 16), k, p)
    assert gp.item() == pytest.approx((k * n2 ** (p / 2)).item(), rel=1e-5)
    gp.backward()                                                     # double backward: d GP / d a
    assert torch.allclose(lin.a.grad, k * p * n2 ** (p / 2 - 1) * lin.a.detach(), rtol=1e-5, atol=1e-8)
    assert torch.allclose(lin.b.grad, k * p * n2 ** (p / 2 - 1) * lin.b.detach(), rtol=1e-5, atol=1e-8)


def test_ma_gp_against_per_sample_gradients():
    "On the real D (eval, float64): one sample at a time, independent autograd; the loss's 'ma_gp' term is the same."
    torch.manual_seed(0)
    D = Discriminator(16, 4, 16).double().eval()
    real, fake, sent = (t.double() for t in batch(16, B=3))
    norms = []
    for i in range(3):
        x, s = real[i:i + 1].clone().requires_grad_(), sent[i:i + 1].clone().requires_grad_()
        gx, gs = torch.autograd.grad(D(x, s)[1].sum(), (x, s))
        norms.append(torch.cat([gx.flatten(), gs.flatten()]).norm())
    want = 2 * (torch.stack(norms) ** 6).mean()
    assert ma_gradient_penalty(D, real, sent).item() == pytest.approx(want.item(), rel=1e-9)
    loss, t = discriminator_loss(D, real, fake, sent, parts=True, ma_gp=2.)
    assert t['ma_gp'].item() == pytest.approx(want.item(), rel=1e-9)
    assert (loss - t['ma_gp']).item() == pytest.approx(discriminator_loss(D, real, fake, sent).item(), rel=1e-12)


def test_ma_gp_off_is_not_computed(monkeypatch):
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, 'grad', lambda *a, **kw: calls.append(kw) or grad(*a, **kw))
    D = Discriminator(16, 4, 16)
    real, fake, sent = batch(16)
    _, t = d_loss_for(tiny())(D, real, fake, sent, parts=True)
    assert calls == [] and 'ma_gp' not in t
    _, t = d_loss_for(cfg_with(ma_gp=2.))(D, real, fake, sent, parts=True)
    assert len(calls) == 1 and calls[0]['create_graph'] and t['ma_gp'] > 0
    assert not real.requires_grad and not sent.requires_grad         # the caller's tensors are left alone


def test_ma_gp_reaches_d_weights():
    D = Discriminator(16, 4, 16)
    real, _, sent = batch(16)
    ma_gradient_penalty(D, real, sent).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.encoder.parameters())


# ---------------------------------------------------------------- word-level discriminator

def word_setup(seed=0, **gan):
    torch.manual_seed(seed)
    cfg = cfg_with(word_disc=1.0, **gan)
    G, enc = Generator(cfg), image_encoder(cfg).eval().requires_grad_(False)
    WD = build_word_discriminator(cfg)
    B, T = 4, 6
    words, sent = torch.randn(B, 16, T), torch.randn(B, 16)
    mask = torch.arange(T)[None] < torch.tensor([[6], [4], [5], [2]])
    fake = G(torch.randn(B, cfg.gan.z_dim), sent, words, mask)
    return cfg, G, enc, WD, words, sent, mask, fake


def test_word_disc_gradient_reaches_the_generator():
    "The issue's test: G's word loss on G's own images reaches G's parameters; from detached images it does not."
    cfg, G, enc, WD, words, sent, mask, fake = word_setup()
    word_g_loss(WD, enc(fake.images[-1])[0], words, mask, terms=BCETerms).backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert [n for n in missing if not n.startswith('to_images.0.')] == []   # only the first stage's to-image conv is unused
    G.zero_grad(set_to_none=True)
    word_g_loss(WD, enc(fake.images[-1].detach())[0], words, mask, terms=BCETerms).backward()
    assert all(p.grad is None for p in G.parameters())


def test_word_d_loss_trains_wd_not_g():
    cfg, G, enc, WD, words, sent, mask, fake = word_setup()
    r_real, r_fake = enc(torch.randn(4, 3, 32, 32))[0], enc(fake.images[-1])[0]
    word_d_loss(WD, r_real, r_fake, words, mask, terms=BCETerms).backward()
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in WD.parameters())
    with torch.no_grad():
        WD.scale.zero_(); WD.offset.zero_()                          # every logit 0
        assert word_d_loss(WD, r_real, r_fake, words, mask, terms=BCETerms).item() == pytest.approx(2 * math.log(2), abs=1e-6)
        assert word_d_loss(WD, r_real, r_fake, words, mask, terms=HingeTerms).item() == pytest.approx(2., abs=1e-6)


def test_word_disc_sees_words_and_ignores_padding():
    torch.manual_seed(0)
    WD = WordDiscriminator(16)
    regions, words = torch.randn(3, 16, 4, 4), torch.randn(3, 16, 8)
    mask = torch.arange(8)[None] < torch.tensor([[3], [8], [5]])
    out = WD(regions, words, mask)
    assert torch.allclose(WD(regions, words.masked_fill(~mask[:, None], 9.), mask), out, atol=1e-6)
    assert not torch.allclose(WD(regions, words.roll(1, 0), mask.roll(1, 0)), out, atol=1e-3)
    assert not torch.allclose(WD(regions.roll(1, 0), words, mask), out, atol=1e-3)
    w = WD.word_weights(words, mask)
    assert torch.allclose(w.sum(1), torch.ones(3)) and w[~mask].abs().sum() == 0


def test_word_disc_build_and_spectral_norm():
    WD = build_word_discriminator(cfg_with(word_disc=0.5))
    assert isinstance(WD, WordDiscriminator) and not is_parametrized(WD.proj) and n_params(WD) == 16 * 16 + 16 + 2
    assert is_parametrized(build_word_discriminator(cfg_with(word_disc=0.5, spectral_norm=True)).proj)
    with pytest.raises(InvalidInput, match='wrong_words'):
        word_d_loss(WD, torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4), torch.randn(1, 16, 3), terms=BCETerms)


# ---------------------------------------------------------------- every combination

@pytest.mark.parametrize('sn,loss,gp,wd', list(itertools.product([False, True], ['bce', 'hinge'], [0., 2.], [0., 1.])))
def test_every_combination_trains_one_step(sn, loss, gp, wd):
    torch.manual_seed(0)
    cfg = cfg_with(spectral_norm=sn, gan_loss=loss, ma_gp=gp, word_disc=wd)
    G, Ds, WD = Generator(cfg), build_discriminators(cfg), build_word_discriminator(cfg)
    enc = image_encoder(cfg).eval().requires_grad_(False)
    assert (WD is not None) == bool(wd)
    B, T = 4, 5
    words, sent, mask = torch.randn(B, 16, T), torch.randn(B, 16), torch.ones(B, T, dtype=torch.bool)
    fake = G(torch.randn(B, cfg.gan.z_dim), sent, words, mask)
    reals = [torch.randn(B, 3, s, s) for s in cfg.gan.sizes]
    for D, r, f in zip(Ds, reals, fake.images):                     # D step
        l, t = d_loss_for(cfg)(D, r, f.detach(), sent, parts=True)
        assert torch.isfinite(l) and ('ma_gp' in t) == bool(gp)
        l.backward()
        assert all(p.grad is not None for p in D.parameters())
    if WD is not None:
        with torch.no_grad(): r_real, r_fake = enc(reals[-1])[0], enc(fake.images[-1])[0]
        word_d_loss(WD, r_real, r_fake, words, mask, terms=adv_terms(loss)).backward()
        assert all(p.grad is not None for p in WD.parameters())
    for D in Ds: D.requires_grad_(False)                            # G step
    g = sum(g_adv_loss_for(cfg)(D, f, sent) for D, f in zip(Ds, fake.images))
    if WD is not None: g = g + cfg.gan.word_disc * word_g_loss(WD.requires_grad_(False), enc(fake.images[-1])[0], words, mask, terms=adv_terms(loss))
    assert torch.isfinite(g)
    g.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())
