"""models.Translator's decoding and files: the KV-cached step equals re-reading the prefix, greedy and
beam search agree with a search done by hand, finished sentences leave the batch without changing the
others, a model file carries its subwords."""
import numpy as np
import pytest

from dataset.subwords import BOS, EOS, PAD, Subwords
from models import Translator, load
from models import translation_search as search
from mytorch.nn import log_softmax


def _model(seed=0, V=23, **kw):
    m = Translator(V, d_model=16, nhead=2, enc_layers=2, dec_layers=2, d_ff=24, dropout=0.1, max_len=40,
                   seed=seed, **kw)
    rng = np.random.default_rng(seed)
    for _, p, _ in m.named_parameters():
        p += 0.3 * rng.standard_normal(p.shape).astype(p.dtype)   # a peaked, not uniform, next-token law
    return m


def _src(rng, V, B=5, S=7):
    src = np.full((B, S), PAD, np.int32)
    for b in range(B):
        n = int(rng.integers(1, S))
        src[b, :n] = rng.integers(EOS + 1, V, n)
        src[b, n] = EOS
    return src


def _full_logp(model, src, prefix):
    """log p(next | prefix) by the training path: the whole prefix re-read (eval mode), over the tokens a
    translation may hold (PAD, UNK and BOS never: decoding's rule)."""
    m = model.eval()
    y_in = np.concatenate([np.full((len(src), 1), BOS, np.int32), np.asarray(prefix, np.int32)], axis=1)
    logits = m.forward(src, y_in)[:, -1].astype(np.float64)
    logits[:, :EOS] = -np.inf
    return log_softmax(logits)


def test_cached_step_equals_rereading_the_prefix(rng):
    model = _model()
    src = _src(rng, 23)
    dec = search.Decoder(model, src)
    tokens, prefix = np.full(len(src), BOS), np.zeros((len(src), 0), np.int32)
    for _ in range(5):
        got = log_softmax(dec.step(tokens).astype(np.float64))
        np.testing.assert_allclose(got, _full_logp(model, src, prefix), atol=2e-5)
        tokens = rng.integers(EOS + 1, 23, len(src))
        prefix = np.concatenate([prefix, tokens[:, None].astype(np.int32)], axis=1)


def test_greedy_is_the_argmax_path_and_rows_leave_at_eos(rng):
    model = _model(seed=1)
    src = _src(rng, 23)
    got = search.search(model, src, beams=1, max_len=12, no_repeat=0)
    for b in range(len(src)):                                     # sentence by sentence, by hand
        prefix = []
        for _ in range(12):
            nxt = int(_full_logp(model, src[b:b + 1], [prefix]).argmax())
            if nxt == EOS:
                break
            prefix.append(nxt)
        assert got[b] == [t for t in prefix if t > EOS]
    assert search.search(model, src, beams=1, max_len=12, cache=False, no_repeat=0) == got


def test_beam_search_finds_at_least_greedys_score_and_matches_without_cache(rng):
    model = _model(seed=2)
    src = _src(rng, 23, B=4)
    greedy = search.search(model, src, beams=1, max_len=10, no_repeat=0)
    beam = search.search(model, src, beams=4, alpha=0.0, max_len=10, no_repeat=0)
    assert search.search(model, src, beams=4, alpha=0.0, max_len=10, cache=False, no_repeat=0) == beam

    def logp(b, seq):                                             # the sequence's log p, EOS included
        total, prefix = 0.0, []
        for t in list(seq) + [EOS]:
            total += float(_full_logp(model, src[b:b + 1], [prefix])[0, t])
            prefix.append(t)
        return total
    for b in range(len(src)):
        if len(greedy[b]) < 10 and len(beam[b]) < 10:             # both finished (ended in EOS)
            assert logp(b, beam[b]) >= logp(b, greedy[b]) - 1e-6


def test_a_sentence_translates_the_same_alone_or_in_a_batch(rng):
    model = _model(seed=3)
    src = _src(rng, 23, B=6)
    together = search.search(model, src, beams=3, max_len=10)
    for b in range(len(src)):
        width = max(1, int((src[b] != PAD).sum()))
        assert search.search(model, src[b:b + 1, :width], beams=3, max_len=10) == [together[b]]


def _tiny_subwords():
    texts = [f"the dog sees {n} cats ." for n in range(40)] + [f"狗 看见 {n} 只 猫 。" for n in range(40)]
    return Subwords.train(texts, 40)


def test_model_file_carries_its_subwords(tmp_path):
    sp = _tiny_subwords()
    model = _model(V=sp.vocab_size)
    model.subwords = sp
    model.save(tmp_path / "m.npz", meta={"langs": "de-en"})
    back = load(tmp_path / "m.npz")
    assert isinstance(back, Translator) and back.meta == {"langs": "de-en"}
    sentence = ["the dog sees 3 cats ."]
    assert back.translate(sentence, beams=2) == model.eval().translate(sentence, beams=2)
    with pytest.raises(TypeError, match="a list of sentences"):
        back.translate("the dog")
    with pytest.raises(ValueError, match="reads at most 39"):
        back.translate(["the dog " * 40])


def test_cross_attention_rows_are_distributions_over_the_source(tmp_path):
    sp = _tiny_subwords()
    model = _model(V=sp.vocab_size)
    model.subwords = sp
    src, tgt, A = model.cross_attention("the dog sees 3 cats .", "the dog sees 4 cats .")
    assert A.shape == (len(tgt), len(src)) and src[-1] == tgt[-1] == "</s>"
    np.testing.assert_allclose(A.sum(axis=1), 1, rtol=1e-5)
    from app.translate_pictures import attention_png
    attention_png([(src, tgt, A)], tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_no_repeat_bans_exactly_the_tokens_that_would_repeat_an_ngram():
    hist = np.array([[5, 6, 7, 5, 6], [5, 6, 5, 6, 5], [4, 4, 4, 4, 4]])
    got = search.ban_repeats(np.zeros((3, 10)), hist, 3)
    # row 0: "5 6" was followed by 7; row 1: "6 5" was followed by 6; row 2: "4 4" by 4
    assert [list(np.flatnonzero(np.isinf(r))) for r in got] == [[7], [6], [4]]
    assert np.isinf(search.ban_repeats(np.zeros((1, 10)), np.array([[3, 8]]), 1)[0]).sum() == 2
    assert not np.isinf(search.ban_repeats(np.zeros((1, 10)), np.array([[3]]), 3)).any()


def test_no_repeated_trigram_in_any_translation(rng):
    model = _model(seed=4)
    for beams in (1, 3):
        for out in search.search(model, _src(rng, 23, B=6), beams=beams, max_len=20, no_repeat=3):
            grams = [tuple(out[i:i + 3]) for i in range(len(out) - 2)]
            assert len(grams) == len(set(grams))
