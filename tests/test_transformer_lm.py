"""TransformerLM: whole-model gradients against finite differences, the KV cache, the state, files.

Shapes: B batch, T time, C context (the state), D = d_model, V vocabulary, M = max_len.

Gradient checks run a tiny model (V 13, D 8, 2 heads, 2 layers) in float64 with every
parameter redrawn at a scale where the gradients sit well above the finite-difference
rounding floor (the GPT-2 init, N(0, 0.02), would not). Loss = CrossEntropyLoss over the
(B*T, V) logits. Every parameter array is checked: vectors entry by entry, matrices at
SAMPLED random entries (one case checks every entry of everything), the error scaled by the
largest gradient entry of that array. The key bias b_k is the exception: adding q . b_k to
every score of a query changes no softmax, so its gradient is exactly 0 and both sides must
be ~0 (with a single position, so are those of W_q, b_q and W_k). With dropout the masks
are held fixed by restoring the dropout generator before every forward.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import models
from app.evaluate import stream_nll
from app.step import train_step
from models import LanguageModel, TransformerLM
from mytorch import optim
from mytorch.gradcheck import numerical_grad
from lm_helpers import FixedMasks, backprop, bad_ids, ce, unique_params

V, D, H, L, M = 13, 8, 2, 2, 6
VECTOR, SAMPLED = 4 * D, 12  # arrays up to VECTOR entries are checked whole, bigger ones at SAMPLED entries


def _model(dropout=0.0, positional="learned", gelu="tanh", max_len=M, seed=0, scale=0.5, dtype=np.float64,
           vocab=V, d_model=D):
    m = TransformerLM(vocab, d_model=d_model, nhead=H, nlayers=L, max_len=max_len, dropout=dropout,
                      positional=positional, gelu=gelu, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for name, p in unique_params(m).items():
        centre = 1.0 if name.endswith("gamma") else 0.0
        p[...] = centre + rng.uniform(-scale, scale, p.shape)
    return m


def _check_param(f, name, p, grad, entries, zero=False, rtol=1e-6, eps=1e-5):
    """Central differences of f() at the flat `entries` of p against the analytic grad; zero: the
    gradient is exactly 0 (both sides must be ~0)."""
    flat = p.reshape(-1)
    numeric = np.empty(len(entries))
    for k, i in enumerate(entries):
        view = flat[i:i + 1]                            # a one-entry view: numerical_grad nudges it
        numeric[k] = numerical_grad(f, view, eps)[0]
    analytic = grad.reshape(-1)[entries]
    if zero:
        assert np.abs(grad).max() < 1e-12 and np.abs(numeric).max() < 1e-8, (name, numeric)
        return
    scale = max(np.abs(grad).max(), np.abs(numeric).max())
    err = np.abs(numeric - analytic).max() / scale
    assert scale > 1e-6 and err <= rtol, f"{name}: relative error {err:.2e} (scale {scale:.2e})"


def _check_all(f, model, grads, rng=None, one_position=False):
    """Every parameter (a tied matrix once): all entries, or SAMPLED random ones of big arrays when rng
    is given. The key bias b_k moves no softmax: its gradient is 0; with one position (S = 1)
    every softmax is [1], so nothing of the queries and keys matters either."""
    zero = ("attn.W_q", "attn.W_k", "attn.b_q", "attn.b_k") if one_position else ("attn.b_k",)
    for name, p in unique_params(model).items():
        if rng is None or p.size <= VECTOR:
            entries = np.arange(p.size)
        else:
            entries = rng.choice(p.size, SAMPLED, replace=False)
        _check_param(f, name, p, grads[name], entries, zero=name.endswith(zero))


def _grads(model):
    return {name: g.copy() for name, _, g in model.named_parameters()}


# ------------------------------------------------------------------ gradient checks

GRAD_CASES = [  # (dropout, positional, gelu, B, T, context C, repeated ids)
    pytest.param(0.0, "learned", "tanh", 2, 4, 0, False, id="learned-tanh"),
    pytest.param(0.0, "sinusoidal", "none", 2, 5, 0, False, id="sinusoidal-erf"),
    pytest.param(0.3, "learned", "tanh", 2, 4, 0, False, id="dropout"),
    pytest.param(0.3, "sinusoidal", "none", 2, 3, 4, True, id="dropout-context-repeated-ids"),
    pytest.param(0.0, "learned", "tanh", 1, 1, 0, False, id="B1-T1"),
    pytest.param(0.0, "learned", "none", 2, 3, 2, False, id="context"),
]


@pytest.mark.parametrize("fused", [False, True], ids=["forward-backward", "forward_loss"])
@pytest.mark.parametrize("dropout, positional, gelu, B, T, C, repeated", GRAD_CASES)
def test_gradients_match_finite_differences(dropout, positional, gelu, B, T, C, repeated, fused, rng):
    """Both training paths (forward -> CrossEntropyLoss -> backward, and the fused forward_loss ->
    backward_loss); the finite differences always through forward + CrossEntropyLoss."""
    model = _model(dropout, positional, gelu, seed=int(rng.integers(1000)))
    ids = np.full((B, T), 7) if repeated else rng.integers(0, V, (B, T))
    targets = rng.integers(0, V, (B, T))
    state = rng.integers(0, V, (B, C)) if C else None
    masks = FixedMasks(model)

    masks.restore()
    loss = backprop(model, ids, targets, state, fused)
    grads = _grads(model)
    if dropout:   # the masks really drop something, in every kind of dropout layer
        assert all((d.mask == 0).any() for d in model.drops)

    def f():
        masks.restore()
        return ce(model.forward(ids, state)[0], targets)[0]

    assert f() == pytest.approx(loss, rel=1e-12)          # the fixed masks reproduce the analytic pass
    params = unique_params(model)
    assert ("pos.W" in params) == (positional == "learned")
    _check_all(f, model, grads, rng, one_position=C + T == 1)
    assert model.decoder.params["W"] is model.embedding.params["W"]
    assert model.decoder.grads["W"] is model.embedding.grads["W"]


def test_every_entry_of_every_parameter_once(rng):
    """One case with no random directions: each entry of each parameter against its own difference."""
    model = _model(dropout=0.2)
    ids, targets = rng.integers(0, V, (2, 3)), rng.integers(0, V, (2, 3))
    masks = FixedMasks(model)
    masks.restore()
    backprop(model, ids, targets, None, fused=True)
    grads = _grads(model)

    def f():
        masks.restore()
        return ce(model.forward(ids)[0], targets)[0]

    _check_all(f, model, grads)


def test_forward_loss_equals_forward_then_cross_entropy_in_float32(rng):
    model = _model(dtype=np.float32, vocab=300, d_model=16, scale=0.3)
    ids, targets = rng.integers(0, 300, (4, 6)), rng.integers(0, 300, (4, 6))
    model.zero_grad()
    logits, state = model.forward(ids)
    loss, crit = ce(logits, targets)
    model.backward(crit.backward().reshape(4, 6, 300))
    plain = _grads(model)
    model.zero_grad()
    loss2, state2 = model.forward_loss(ids, targets)
    model.backward_loss()
    assert_allclose(loss2, loss, rtol=1e-6)
    assert_array_equal(state2, state)
    top = max(np.abs(g).max() for g in plain.values())      # b_k's gradient is 0 plus rounding noise
    for n, _, g in model.named_parameters():
        assert g.dtype == np.float32
        assert_allclose(g, plain[n], rtol=1e-4, atol=1e-5 * np.abs(plain[n]).max() + 1e-6 * top)


def test_gradients_accumulate_and_zero_grad_clears(rng):
    model = _model()
    ids, targets = rng.integers(0, V, (2, 4)), rng.integers(0, V, (2, 4))
    model.zero_grad()
    model.forward_loss(ids, targets)
    model.backward_loss()
    one = _grads(model)
    model.forward_loss(ids, targets)
    model.backward_loss()
    for n, g in _grads(model).items():
        assert_allclose(g, 2 * one[n], rtol=1e-12, atol=1e-15)
    model.zero_grad()
    assert all(not g.any() for _, _, g in model.named_parameters())


def test_inference_between_forward_and_backward_changes_nothing(rng):
    """predict and generate save nothing: a pending backward gives the same gradients."""
    model = _model(dropout=0.3)
    ids, targets = rng.integers(0, V, (3, 5)), rng.integers(0, V, (3, 5))
    masks = FixedMasks(model)
    masks.restore()
    backprop(model, ids, targets, None, fused=True)
    alone = _grads(model)
    masks.restore()
    model.zero_grad()
    model.forward_loss(ids, targets)
    model.predict(rng.integers(0, V, (2, 9)))
    model.generate(rng.integers(0, V, (2, 2)), 7, num_beams=2)
    assert model.training
    model.backward_loss()
    for n, g in _grads(model).items():
        assert_array_equal(g, alone[n])


# ------------------------------------------------------------------ forward, state, predict

@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("B, T", [(3, 6), (1, 1), (2, 3)])
def test_predict_is_forwards_last_step(B, T, positional, rng):
    model = _model(dropout=0.5, positional=positional).eval()
    ids = rng.integers(0, V, (B, T))
    scores = model.predict(ids)
    assert scores.shape == (B, V)
    logits, state = model.forward(ids)
    assert_allclose(scores, logits[:, -1], rtol=1e-12, atol=1e-12)
    assert_array_equal(state, ids[:, -(M - 1):])                       # the state: the last M - 1 ids


def test_predict_slides_a_window_over_long_inputs(rng):
    model = _model()
    ids = rng.integers(0, V, (2, 3 * M + 1))
    assert_allclose(model.predict(ids), model.predict(ids[:, -M:]), rtol=1e-12)
    with pytest.raises(ValueError, match=f"max_len .* is {M}"):
        model.forward(ids)
    with pytest.raises(ValueError, match="max_len"):
        model.forward_loss(ids, ids)


def test_the_state_is_the_context_read_first(rng):
    """encode(b, state after a) == the a + b read at once, at b's positions; the context is cut to M - T."""
    model = _model().eval()
    a, b = rng.integers(0, V, (2, 2)), rng.integers(0, V, (2, 3))
    whole = model.forward(np.concatenate([a, b], axis=1))[0][:, 2:].copy()
    _, state = model.forward(a)
    parts, state2 = model.forward(b, state)
    assert_allclose(parts, whole, rtol=1e-12, atol=1e-12)
    X, state3 = model.encode(b, state, cache=False)                     # the inference path too
    assert_allclose(model.decoder.forward(X), whole, rtol=1e-10, atol=1e-12)
    assert_array_equal(state3, state2)
    long = rng.integers(0, V, (2, 9))                                   # only the last M - T = 3 are read
    cut = model.forward(np.concatenate([long[:, -3:], b], axis=1))[0][:, 3:].copy()
    assert_allclose(model.forward(b, long)[0], cut, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="state"):
        model.forward(b, long[:1])


def test_stream_nll_carries_the_context(rng):
    """app.evaluate.stream_nll, chunk by chunk with the state, == the whole stream read at once."""
    model = _model(max_len=20)
    articles = [rng.integers(0, V - 2, n) for n in (7, 5, 9)]
    nll, count = stream_nll(model, articles, V - 2, V - 1, streams=2, chunk=4)
    ids = np.concatenate([np.concatenate(([V - 2], a, [V - 1])) for a in articles])
    n = (ids.size - 1) // 2
    logits = model.eval().forward(ids[:n * 2].reshape(2, n))[0]
    assert count == 2 * n
    assert nll == pytest.approx(ce(logits, ids[1:n * 2 + 1].reshape(2, n))[0], rel=1e-10)


def test_inference_never_drops_and_keeps_the_mode(rng):
    model = _model(dropout=0.5)
    ids = rng.integers(0, V, (4, 5))
    a = model.predict(ids)
    assert model.training
    assert_array_equal(model.predict(ids), a)
    logits, _ = model.forward(ids)                                      # while training forward drops
    assert np.abs(logits[:, -1] - a).max() > 1e-6


def test_dropout_generators_restore_to_the_same_step(rng):
    """What the trainer does for a bit-identical resume: save each drops[i].rng state, restore it."""
    model = _model(dropout=0.3)
    assert len(model.drops) == 1 + 3 * L
    ids, targets = rng.integers(0, V, (2, 5)), rng.integers(0, V, (2, 5))
    saved = [d.rng.bit_generator.state for d in model.drops]
    first = model.forward_loss(ids, targets)[0]
    assert model.forward_loss(ids, targets)[0] != first                 # new masks
    for d, st in zip(model.drops, saved):
        d.rng.bit_generator.state = st
    assert model.forward_loss(ids, targets)[0] == first


@pytest.mark.parametrize("bad, err", bad_ids(V))
def test_bad_ids_raise(bad, err):
    model = _model()
    for call in (model.predict, model.forward, lambda x: model.generate(x, 2)):
        with pytest.raises(err):
            call(bad)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(vocab_size=1), "vocab_size"), (dict(d_model=0), "d_model"), (dict(nhead=3), "multiple of nhead"),
    (dict(nlayers=0), "nlayers"), (dict(max_len=0), "max_len"), (dict(max_len=2.5), "max_len"),
    (dict(dropout=1.0), "dropout"), (dict(dropout=-0.1), "dropout"), (dict(positional="rope"), "positional"),
    (dict(gelu="erf"), "gelu"),
])
def test_bad_configuration_raises(kwargs, phrase):
    args = dict(vocab_size=V, d_model=D, nhead=H, nlayers=L) | kwargs
    with pytest.raises(ValueError, match=phrase):
        TransformerLM(**args)


def test_phases_and_flops(rng):
    model = _model(dtype=np.float32)
    marks = []
    model.timer = marks.append
    opt = optim.Adam(model.parameters(), lr=1e-3)
    train_step(model, opt, rng.integers(0, V, (2, 4)), rng.integers(0, V, (2, 4)))
    assert tuple(marks) == TransformerLM.PHASES
    # 6 * (D V + L (12 D^2 + 2 T D)): 128, 33280 words, 2 layers, T 20
    assert TransformerLM.matmul_flops_per_token(33280, 128, 2, 20) == 6 * (128 * 33280 + 2 * (12 * 128 ** 2
                                                                                              + 2 * 20 * 128))


# ------------------------------------------------------------------ the KV cache and generate

def _gen_model(seed, **kwargs):
    """Big weights, no decoder bias: the best next word depends on the prefix."""
    model = _model(seed=seed, scale=1.5, **kwargs).eval()
    model.decoder.params["b"][...] = 0
    return model


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_decode_step_gives_predicts_scores_past_max_len(positional, rng):
    """KV-cached steps == predict on the growing prefix, into the sliding window and after a
    select_state that reorders and repeats rows; the state handed in is left as it was."""
    model = _gen_model(1, positional=positional)
    seq = rng.integers(0, V, (3, 2))
    logits, state = model.decode_start(seq)
    assert_allclose(logits, model.predict(seq), rtol=1e-10, atol=1e-12)
    for t in range(2 * M):
        if t == 3:                                                     # beams: reorder and repeat rows
            rows = np.array([2, 0, 0, 1])
            state, seq, logits = model.select_state(state, rows), seq[rows], logits[rows]
        nxt = rng.integers(0, V, len(seq))
        again = model.decode_step(nxt, state)[0].copy()
        logits, state = model.decode_step(nxt, state)
        assert_array_equal(logits, again)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
        assert_allclose(logits, model.predict(seq), rtol=1e-10, atol=1e-12)
        n = min(seq.shape[1], M)
        assert state["kv"][0]["K"].shape == (len(seq), H, n, D // H)   # the cache grows to M, no more


PLAIN = dict(no_repeat_ngram=0, ban_special=False, top_p=None)


@pytest.mark.parametrize("B, T, K", [(3, 4, 6), (1, 1, 1), (2, 2, 9)])
def test_greedy_generate_is_stepwise_argmax(B, T, K, rng):
    model = _gen_model(3)
    inp = rng.integers(0, V, (B, T))
    out = model.generate(inp, K, temperature=0.0, **PLAIN)
    assert out.shape == (B, K) and out.dtype.kind == "i"
    seq = inp
    for _ in range(K):
        seq = np.concatenate([seq, model.predict(seq).argmax(axis=1)[:, None]], axis=1)
    assert_array_equal(out, seq[:, T:])
    assert len(set(model.predict(rng.integers(0, V, (30, 3))).argmax(axis=1).tolist())) > 2   # it has teeth


def test_sampling_and_beam_search_run_and_are_seeded(rng):
    model = _gen_model(4)
    inp = rng.integers(0, V, (2, 3))
    a = model.generate(inp, 8, temperature=1.0, seed=5)
    assert_array_equal(a, model.generate(inp, 8, temperature=1.0, seed=5))
    beams = model.generate(inp, 8, num_beams=3, **PLAIN)
    assert beams.shape == (2, 8)
    one_beam = model.generate(inp, 8, num_beams=1, temperature=0.0, **PLAIN)
    assert_array_equal(model.generate(inp, 8, num_beams=1, temperature=0.0, **PLAIN), one_beam)


# ------------------------------------------------------------------ files

def _vocab_words(n=V):
    return np.array([f"w{i}" for i in range(n - 3)] + ["<unk>", "<sos>", "<eos>"])


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_save_load_round_trip(positional, tmp_path, rng):
    model = _model(dropout=0.2, positional=positional, gelu="none", dtype=np.float32)
    path = tmp_path / "t.npz"
    model.save(path, meta={"epoch": 2}, vocab=_vocab_words())
    back = models.load(path)
    assert isinstance(back, TransformerLM) and not back.training
    assert back.config == model.config and back.config["model"] == "transformer"
    assert back.meta == {"epoch": 2}
    assert_array_equal(back.vocab, _vocab_words())
    ids = rng.integers(0, V, (3, 5))
    assert_array_equal(back.predict(ids), model.predict(ids))
    assert back.decoder.params["W"] is back.embedding.params["W"]
    with np.load(path) as z:
        names = [k for k in z.files if k.startswith("param/")]
        assert "param/decoder.W" not in names                           # the tied matrix stored once
        assert sum(z[k].size for k in names) == sum(p.size for p in unique_params(model).values())


def test_float16_file_moves_predictions_a_little(tmp_path, rng):
    model = _model(dtype=np.float32)
    model.save(tmp_path / "h.npz", float16=True)
    back = models.load(tmp_path / "h.npz")
    ids = rng.integers(0, V, (4, 6))
    a, b = model.predict(ids), back.predict(ids)
    assert 0 < np.abs(a - b).max() < 1e-2 * np.abs(a).max()


def test_lstm_files_still_load_and_unknown_models_are_refused(tmp_path):
    lstm = LanguageModel(V, emsize=4, nhid=5, nlayers=1)
    lstm.save(tmp_path / "lstm.npz")
    assert type(models.load(tmp_path / "lstm.npz")) is LanguageModel
    from models.checkpoint import load_npz, save_npz_atomic, _json, _unjson
    arrays = load_npz(tmp_path / "lstm.npz")
    arrays["__config__"] = _json(_unjson(arrays["__config__"]) | {"model": "mamba"})
    save_npz_atomic(tmp_path / "odd.npz", arrays)
    with pytest.raises(models.CheckpointError, match="unknown model type 'mamba'.*known: lstm, transformer"):
        models.load(tmp_path / "odd.npz")
    arrays = load_npz(tmp_path / "lstm.npz")
    arrays["__config__"] = _json(_model().config | {"nhead": 3})
    save_npz_atomic(tmp_path / "bad.npz", arrays)
    with pytest.raises(models.CheckpointError, match="unknown model configuration"):
        models.load(tmp_path / "bad.npz")


# ------------------------------------------------------------------ training sanity

def test_a_few_adam_steps_learn_a_repeating_corpus():
    corpus = np.tile(np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]), 20)
    model = TransformerLM(V, d_model=16, nhead=2, nlayers=2, max_len=8, dropout=0.0, seed=0)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(40):
        starts = rng.integers(0, corpus.size - 9, 8)
        x = np.stack([corpus[s:s + 8] for s in starts])
        y = np.stack([corpus[s + 1:s + 9] for s in starts])
        losses.append(train_step(model, opt, x, y)[0])
    assert losses[0] > 2.0 and np.mean(losses[-5:]) < 0.5 * losses[0], losses
