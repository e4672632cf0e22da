"Any text as a caption: the tokenizer, `encode_captions` and `Text2Image` give images or one sentence, for arbitrary unicode (hypothesis)."
import pytest, torch
from hypothesis import given, settings, HealthCheck, strategies as st
from attngan.config import UserError
from attngan.data import tokenize
from attngan.sample import Text2Image, encode_captions

PIPE = None


def pipe():
    global PIPE
    if PIPE is None: PIPE = Text2Image.pretrained()                   # the shipped model: every stage on a CPU in milliseconds
    return PIPE


def one_sentence(e) -> bool: return '\n' not in str(e) and len(str(e)) < 400


any_text = st.text(alphabet=st.characters(codec='utf-8'), max_size=300)   # every code point a str can hold, surrogates aside
wordy = st.lists(st.sampled_from(['red', 'crown', 'bird', 'this', 'has', 'a', 'blue', 'wing', 'zzq', 'äöü', '鳥', '🐦', '\n', '\t', '']), max_size=40).map(' '.join)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_tokenizer_gives_lower_case_ascii_words(s):
    toks = tokenize(s)
    assert all(t and t.isascii() and t == t.lower() and all(ch.isalnum() or ch == '_' for ch in t) for t in toks)
    assert tokenize(' '.join(toks)) == toks                             # tokenising is idempotent


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(any_text, wordy), min_size=1, max_size=4))
def test_encode_captions_any_text(captions):
    vocab = pipe().vocab
    try: caps, lengths, mask, toks, unknown = encode_captions(vocab, captions, 18)
    except UserError as e:
        assert one_sentence(e); return
    assert caps.shape[0] == len(captions) == len(lengths) == len(toks) == len(unknown)
    assert (lengths >= 1).all() and caps.shape[1] == int(lengths.max()) <= 18
    assert torch.equal(mask, torch.arange(caps.shape[1])[None] < lengths[:, None])
    assert ((caps >= 0) & (caps < len(vocab))).all() and (caps[~mask] == 0).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(any_text, wordy), st.integers(0, 2**31 - 1))
def test_text2image_any_caption(caption, seed):
    p = pipe()
    try: res = p(caption, seed=seed)
    except UserError as e:
        assert one_sentence(e); return
    for img, size in zip(res.images, p.cfg.gan.sizes):
        assert img.shape == (1, 3, size, size) and torch.isfinite(img).all() and img.abs().max() <= 1
