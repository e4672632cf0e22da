"""Every setting of every config section is checked: out-of-range values and wrong JSON types are refused with one
sentence naming the setting by its dotted path; the presets, the shipped configs and the values the rest of the
project uses pass; the accepted stage sizes are exactly the ones the networks build."""
import dataclasses, json
from pathlib import Path
import pytest
import torch
from attngan.config import (Config, DataConfig, TextConfig, DAMSMConfig, GANConfig, TrainConfig, PRESETS, RULES, InvalidInput,
                            UserError, check_positive, check_range, check_choice, check_type, tiny)

SECTIONS = dict(data=DataConfig, text=TextConfig, damsm=DAMSMConfig, gan=GANConfig, train=TrainConfig)
FIELDS = [(s, f.name, f.type) for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
IDS = [f"{s}.{n}" for s, n, _ in FIELDS]
NAN, INF = float('nan'), float('inf')

# Out-of-range values, per setting. A new numeric setting must get an entry here (and a rule in config's RULES).
BAD = {
    ('data', 'captions_per_image'): [0, -1],
    ('data', 'max_words'): [-1],
    ('data', 'words_percentile'): [0, -5.0, 100.5, NAN],
    ('data', 'bbox_scale'): [0, -0.5, INF],
    ('data', 'synth_n'): [0, -10],
    ('data', 'synth_size'): [7, 0],
    ('data', 'synth_seed'): [-1, 2**63],
    ('data', 'num_workers'): [-1],
    ('data', 'max_skipped'): [-0.1, 1.5, NAN],
    ('text', 'emb_dim'): [0, -16],
    ('text', 'hidden_dim'): [0],
    ('text', 'n_layers'): [0],
    ('text', 'dropout'): [1.0, -0.1, 1.5],
    ('text', 'sentence'): ['first', '', 'LAST'], ('text', 'encoder'): ['bert', 'MiniLM', ''],
    ('damsm', 'image_encoder'): ['vgg', 'Inception', ''],
    ('damsm', 'image_size'): [7, 0, -64],
    ('damsm', 'cnn_width'): [0],
    ('damsm', 'gamma1'): [0, -4.0, NAN],
    ('damsm', 'gamma2'): [0, -5.0, INF],
    ('damsm', 'gamma3'): [0, -10.0],
    ('damsm', 'batch_size'): [1, 0],
    ('damsm', 'epochs'): [0, -1],
    ('damsm', 'lr'): [0, -0.002, INF],
    ('damsm', 'lr_decay'): [0, 1.01, -0.5],
    ('damsm', 'lr_floor'): [-0.1, 1.5],
    ('damsm', 'rnn_grad_clip'): [0, -0.25],
    ('damsm', 'cnn_global'): ['mean', 'Deep'],
    ('damsm', 'cnn_parts'): [0],
    ('gan', 'sizes'): [(), (4, 8), (12, 24), (16, 48), (32, 16), (16, 16), (16.0, 32.0), (True, 2), (6,)],
    ('gan', 'z_dim'): [0],
    ('gan', 'cond_dim'): [0, -100],
    ('gan', 'ngf'): [0, -4],
    ('gan', 'ndf'): [0],
    ('gan', 'n_res'): [-1],
    ('gan', 'lambda_damsm'): [-1.0, NAN],
    ('gan', 'kl_weight'): [-0.5],
    ('gan', 'upsample'): ['bilinear', 'PixelShuffle', ''],
    ('gan', 'refine_block'): ['rdb', ''],
    ('gan', 'word_disc'): [-1.0, NAN],
    ('gan', 'perceptual'): [-0.1, INF],
    ('gan', 'gan_loss'): ['wgan', 'BCE'],
    ('gan', 'ma_gp'): [-2.0, NAN],
    ('gan', 'ma_gp_power'): [0, -6.0],
    ('train', 'batch_size'): [1, 0, -20],
    ('train', 'epochs'): [0],
    ('train', 'lr_g'): [0, -2e-4],
    ('train', 'lr_d'): [0, NAN],
    ('train', 'betas'): [(0.5,), (0.5, 1.0), (-0.1, 0.9), (0.5, 0.999, 0.1), ('a', 'b'), (NAN, 0.9)],
    ('train', 'ema'): [1.0, -0.1],
    ('train', 'seed'): [-1, 2**63],
    ('train', 'sample_every'): [0],
    ('train', 'ckpt_every'): [0, -1000],
    ('train', 'threads'): [-1],
    ('train', 'amp'): ['fp16', 'BF16', 'bfloat16'],
}
# Settings with no out-of-range value (their type is still checked, below), each with the reason.
NO_RANGE = {
    ('data', 'root'): "any folder path or 'synth'; the folder's layout is checked when it is read (attngan.data)",
    ('damsm', 'inception_weights'): "any file path or ''; the file is checked when the encoder loads it (attngan.damsm)",
}
# Edge values that mean something and must be accepted; every float setting also takes an int here.
GOOD = {
    ('data', 'captions_per_image'): [1], ('data', 'max_words'): [0, 1], ('data', 'words_percentile'): [100, 0.5],
    ('data', 'bbox_scale'): [1, 0.01], ('data', 'synth_n'): [1], ('data', 'synth_size'): [8], ('data', 'synth_seed'): [0, 2**63 - 1],
    ('data', 'num_workers'): [0], ('data', 'max_skipped'): [0, 1, 0.5],
    ('text', 'emb_dim'): [1], ('text', 'hidden_dim'): [1, 6], ('text', 'n_layers'): [1], ('text', 'dropout'): [0, 0.0, 0.99],
    ('text', 'sentence'): ['last', 'mean'], ('text', 'encoder'): ['lstm', 'minilm'],
    ('damsm', 'image_encoder'): ['cnn', 'inception'], ('damsm', 'image_size'): [8, 16, 299], ('damsm', 'cnn_width'): [1, 4],
    ('damsm', 'gamma1'): [4, 1e-3], ('damsm', 'gamma2'): [5], ('damsm', 'gamma3'): [10], ('damsm', 'batch_size'): [2],
    ('damsm', 'epochs'): [1], ('damsm', 'lr'): [1, 1e-9], ('damsm', 'lr_decay'): [1, 1e-3], ('damsm', 'lr_floor'): [0, 1],
    ('damsm', 'rnn_grad_clip'): [1], ('damsm', 'cnn_global'): ['deep', 'parts'], ('damsm', 'cnn_parts'): [1],
    ('gan', 'sizes'): [(8,), (16, 32), (8, 16, 32, 64, 128, 256), [16, 32]], ('gan', 'z_dim'): [1], ('gan', 'cond_dim'): [1],
    ('gan', 'ngf'): [1, 8], ('gan', 'ndf'): [1], ('gan', 'n_res'): [0], ('gan', 'lambda_damsm'): [0, 0.0], ('gan', 'kl_weight'): [0, 2],
    ('gan', 'upsample'): ['nearest', 'pixelshuffle'], ('gan', 'refine_block'): ['residual', 'dense'], ('gan', 'word_disc'): [0, 1],
    ('gan', 'perceptual'): [0, 1.0], ('gan', 'gan_loss'): ['bce', 'hinge'], ('gan', 'ma_gp'): [0, 2], ('gan', 'ma_gp_power'): [6, 0.5],
    ('train', 'batch_size'): [2, 16], ('train', 'epochs'): [1], ('train', 'lr_g'): [1, 1e-3], ('train', 'lr_d'): [1],
    ('train', 'betas'): [(0, 0), [0.9, 0.999], (0.0, 0.5)], ('train', 'ema'): [0, 0.9], ('train', 'seed'): [0, 2**63 - 1],
    ('train', 'sample_every'): [1], ('train', 'ckpt_every'): [1], ('train', 'threads'): [0, 1], ('train', 'amp'): ['', 'bf16', 'auto'],
}
WRONG_TYPE = dict(int=['8', 8.0, True, False, None, [8]], float=['0.5', True, False, None, [0.5], {'v': 1}],
                  bool=[1, 0, 'true', None, 1.0], str=[3, None, True, ['cnn']], tuple=['64,128', 64, None, {'a': 1}, True])


def edited(section, name, value) -> dict:
    "tiny()'s config as `to_dict` writes it, with one setting changed (tuples as lists, as JSON has them)."
    d = tiny().to_dict(); d[section][name] = list(value) if isinstance(value, tuple) else value
    return d


def refusal(d) -> str:
    "The sentence `Config.from_json` refuses the JSON text of `d` with (and `from_dict` refuses `d` with the same)."
    with pytest.raises(InvalidInput) as e1: Config.from_dict(d)
    with pytest.raises(InvalidInput) as e2: Config.from_json(json.dumps(d))
    assert str(e1.value) == str(e2.value)
    msg = str(e1.value)
    assert '\n' not in msg and msg.endswith('.') and 'Traceback' not in msg, msg
    return msg


@pytest.mark.parametrize('section,name,kind', FIELDS, ids=IDS)
def test_every_setting_has_a_rule(section, name, kind):
    "A setting added to a section without a rule in RULES, or without out-of-range values here, fails."
    assert name in RULES[SECTIONS[section]], f"config.{section}.{name} has no rule in config's RULES"
    if kind in ('int', 'float', 'tuple'):
        assert (section, name) in BAD, f"config.{section}.{name} is numeric: list out-of-range values in BAD"
        assert (section, name) in GOOD, f"config.{section}.{name} is numeric: list accepted edge values in GOOD"
    elif kind == 'str':
        assert ((section, name) in BAD) != ((section, name) in NO_RANGE), f"config.{section}.{name}: list bad words in BAD or a reason in NO_RANGE"


@pytest.mark.parametrize('section,name,kind', FIELDS, ids=IDS)
def test_out_of_range_refused(section, name, kind):
    bad = BAD.get((section, name), [])
    if not bad: pytest.skip(NO_RANGE.get((section, name), 'a switch: true or false is all there is'))
    for v in bad:
        msg = refusal(edited(section, name, v))
        assert msg.startswith(f"config.{section}.{name} must be "), msg
        assert msg.endswith(f"(got {v!r})."), msg
        with pytest.raises(InvalidInput, match=f"config.{section}.{name} "):      # a config built in code: the same check
            cfg = tiny(); setattr(getattr(cfg, section), name, v); cfg.validate()


@pytest.mark.parametrize('section,name,kind', FIELDS, ids=IDS)
def test_edge_values_accepted(section, name, kind):
    "Values that mean something at the edge of a range pass, through JSON too; an int is a fine float."
    good = GOOD.get((section, name), [True, False] if kind == 'bool' else ['some/where', ''] if kind == 'str' else [])
    assert good, f"config.{section}.{name}: list accepted values in GOOD"
    for v in good:
        cfg = Config.from_json(json.dumps(edited(section, name, v)))
        got = getattr(getattr(cfg, section), name)
        assert got == (tuple(v) if kind == 'tuple' else v) and type(got) is (tuple if kind == 'tuple' else type(v))
    if kind == 'float': assert any(type(v) is int for v in good), f"config.{section}.{name}: show an int is accepted"


@pytest.mark.parametrize('section,name,kind', FIELDS, ids=IDS)
def test_wrong_type_in_config_json_refused(section, name, kind):
    "A string where an int belongs, a bool where a number belongs (bool is an int in Python), a number where a string belongs ..."
    for v in WRONG_TYPE[kind]:
        msg = refusal(edited(section, name, v))
        assert msg.startswith(f"config.{section}.{name} must be ") and msg.endswith(f"(got {v!r})."), msg


def test_name_and_sections_checked():
    assert 'config.name must be a string (got 3).' == refusal(dict(tiny().to_dict(), name=3))
    assert 'expected a JSON object' in refusal(dict(tiny().to_dict(), gan=[16, 32]))
    with pytest.raises(InvalidInput, match='expected a JSON object'): Config.from_dict([1])
    with pytest.raises(InvalidInput, match=r'config\.gan must be a GANConfig'): dataclasses.replace(tiny(), gan=None).validate()


def test_example_sentence():
    assert refusal(edited('gan', 'ngf', -4)) == 'config.gan.ngf must be a positive integer (got -4).'
    assert refusal(edited('text', 'dropout', 1)) == 'config.text.dropout must be a number in [0, 1) (got 1).'
    assert refusal(edited('data', 'words_percentile', 0)) == 'config.data.words_percentile must be a number in (0, 100] (got 0).'
    assert refusal(edited('train', 'amp', 'fp16')) == "config.train.amp must be one of '', 'bf16', 'auto' (got 'fp16')."


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_presets_valid_and_round_trip(name, tmp_path):
    c = PRESETS[name]()
    assert c.validate() is c
    assert Config.from_json(c.to_json()) == c
    c.to_json(tmp_path/'config.json')
    assert Config.from_json(tmp_path/'config.json') == c


def test_shipped_configs_valid():
    "The configs of the shipped model and evaluator load: validation does not reject what the project itself wrote."
    paths = sorted((Path(__file__).resolve().parents[1]/'attngan'/'assets').rglob('config.json'))
    assert paths
    for p in paths: Config.from_json(p)


def test_first_bad_setting_named():
    d = edited('gan', 'ngf', -4); d['train']['batch_size'] = 0
    assert refusal(d).startswith('config.gan.ngf ')         # sections in order: data, text, damsm, gan, train


# Sizes: what `check_sizes` accepts is what the generator and the discriminators build.

def _nets(sizes):
    from attngan.core import Generator
    from attngan.discriminators import build_discriminators
    c = tiny(); c.gan = dataclasses.replace(c.gan, sizes=tuple(sizes), ngf=2, ndf=2)
    return c, Generator(c), build_discriminators(c)


@pytest.mark.parametrize('sizes', GOOD[('gan', 'sizes')], ids=str)
def test_accepted_sizes_build_networks(sizes):
    c, G, Ds = _nets(sizes)
    B, D, T = 2, c.text.feat_dim, 5
    with torch.no_grad():
        out = G.eval()(torch.randn(B, c.gan.z_dim), torch.randn(B, D), torch.randn(B, D, T))
        assert [tuple(x.shape[-2:]) for x in out.images] == [(s, s) for s in sizes]
        for x, Dn in zip(out.images, Ds): assert Dn.eval()(x, torch.randn(B, D))[1].shape == (B,)


@pytest.mark.parametrize('sizes', [s for s in BAD[('gan', 'sizes')] if s and all(type(v) is int for v in s)], ids=str)
def test_refused_sizes_fail_in_the_networks_too(sizes):
    "Validation is not stricter than the networks: every refused integer size list fails to build there too."
    with pytest.raises((InvalidInput, IndexError, ValueError, RuntimeError)): _nets(sizes)


def test_gan_batch_of_one_cannot_train():
    "Why train.batch_size >= 2: the generator's BatchNorm cannot normalise one sample in training mode."
    from attngan.core import Generator
    c = tiny(); G = Generator(c).train(); D = c.text.feat_dim
    with pytest.raises(ValueError, match='more than 1 value'): G(torch.randn(1, c.gan.z_dim), torch.randn(1, D), torch.randn(1, D, 4))
    assert G(torch.randn(2, c.gan.z_dim), torch.randn(2, D), torch.randn(2, D, 4)).images[-1].shape == (2, 3, 32, 32)


@pytest.mark.parametrize('global_pool', ['deep', 'parts'])
def test_smallest_damsm_image_size_works(global_pool):
    "Why damsm.image_size >= 8: the small CNN encoder runs at 8 px with either global feature (the 'deep' one fails below)."
    from attngan.damsm import CNNEncoder
    regions, glob = CNNEncoder(16, 8, 4, global_pool, 4)(torch.randn(2, 3, 32, 32))
    assert regions.shape[:2] == (2, 16) and glob.shape == (2, 16)
    if global_pool == 'deep':
        with pytest.raises(RuntimeError): CNNEncoder(16, 6, 4, 'deep', 4)(torch.randn(2, 3, 32, 32))


# The helpers other modules use for their own arguments.

def test_argument_helpers():
    assert check_positive('--minutes', 0.5) == 0.5 and check_positive('--steps', 3, integer=True) == 3
    assert check_range('--seed', 0, 0, integer=True) == 0 and check_range('--threads', 0, 0, integer=True) == 0
    cases = [(lambda: check_positive('--steps', 0, integer=True), '--steps must be a positive integer (got 0).'),
             (lambda: check_positive('--steps', 2.5, integer=True), '--steps must be a positive integer (got 2.5).'),
             (lambda: check_positive('--minutes', -1), '--minutes must be a positive number (got -1).'),
             (lambda: check_positive('--minutes', NAN), '--minutes must be a positive number (got nan).'),
             (lambda: check_positive('--batch', True, integer=True), '--batch must be a positive integer (got True).'),
             (lambda: check_range('--seed', -1, 0, integer=True), '--seed must be a non-negative integer (got -1).'),
             (lambda: check_range('--n', 3, 4, 10, integer=True), '--n must be an integer in [4, 10] (got 3).'),
             (lambda: check_range('p', 0, 0, 100, lo_open=True), 'p must be a number in (0, 100] (got 0).'),
             (lambda: check_range('x', 5, hi=5, hi_open=True), 'x must be a number < 5 (got 5).'),
             (lambda: check_choice('--amp', 'fp8', ('', 'bf16')), "--amp must be one of '', 'bf16' (got 'fp8')."),
             (lambda: check_choice('--flag', True, (1, 2)), "--flag must be one of 1, 2 (got True)."),
             (lambda: check_type('--root', 3, 'str'), '--root must be a string (got 3).')]
    for f, sentence in cases:
        with pytest.raises(UserError) as e: f()
        assert str(e.value) == sentence and isinstance(e.value, ValueError)


def test_damsm_batch_of_one_learns_nothing():
    "Why damsm.batch_size >= 2: with one pair there is no mismatched caption, so the matching loss is 0 and has no gradient."
    from attngan.damsm import matching_loss
    S = torch.randn(1, 1, requires_grad=True)
    l1, l2 = matching_loss(S, 10.0)
    assert l1.item() == 0 and l2.item() == 0
    (l1 + l2).backward(); assert float(S.grad.abs().sum()) == 0
    S2 = torch.randn(2, 2, requires_grad=True); sum(matching_loss(S2, 10.0)).backward(); assert float(S2.grad.abs().sum()) > 0
