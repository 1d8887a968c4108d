"""LanguageModel: whole-model BPTT against finite differences, state, inference, files, the CLI.

Shapes: B batch, T time, D embedding, H hidden, V vocabulary.

The gradient checks run the whole model in float64 with weights drawn from
U(-0.6, 0.6) (the default init is ~0.1: gradients that small would sit closer to
the finite-difference rounding floor). Loss = CrossEntropyLoss over the (B*T, V)
logits; every parameter is checked entry by entry (mytorch.gradcheck.check_gradient,
relative error <= 1e-6). With dropout the masks are held fixed by restoring the
dropout generators' state before every forward, so each evaluation draws the same masks.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import models
from dataset.corpus import SOS, UNK, Vocabulary
from models import LanguageModel, check_ids
from models.sampling import choose_next
from mytorch.gradcheck import check_gradient
from lm_helpers import FixedMasks, backprop, bad_ids, ce, unique_params

V = 20


def _model(tied=False, dropout=0.0, dropouth=None, D=4, H=5, L=2, vocab=V, seed=0, scale=0.6,
           dtype=np.float64):
    m = LanguageModel(vocab, emsize=D, nhid=H, nlayers=L, tied=tied, dropout=dropout, dropouth=dropouth,
                      seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for p in unique_params(m).values():
        p[...] = rng.uniform(-scale, scale, p.shape)
    return m


def _rand_state(model, B, rng):
    return [(rng.uniform(-0.5, 0.5, (B, c.hidden_size)), rng.uniform(-0.5, 0.5, (B, c.hidden_size)))
            for c in model.layers]


# ------------------------------------------------------------------ gradient checks

GRAD_CASES = [  # (tied, dropout, dropouth, B, T, initial state given, repeated ids)
    pytest.param(False, 0.0, None, 3, 6, False, False, id="untied"),
    pytest.param(True, 0.0, None, 3, 6, False, False, id="tied"),
    pytest.param(False, 0.4, 0.3, 3, 6, False, False, id="untied-dropout"),
    pytest.param(True, 0.4, None, 2, 5, False, False, id="tied-dropout"),
    pytest.param(False, 0.0, None, 2, 4, True, False, id="initial-state"),
    pytest.param(True, 0.3, 0.2, 2, 4, True, True, id="tied-dropout-state-repeated-ids"),
    pytest.param(False, 0.0, None, 1, 1, False, False, id="B1-T1"),
    pytest.param(True, 0.5, None, 1, 1, True, False, id="tied-dropout-B1-T1-state"),
]


@pytest.mark.parametrize("fused", [False, True], ids=["forward-backward", "forward_loss"])
@pytest.mark.parametrize("tied, dropout, dropouth, B, T, with_state, repeated", GRAD_CASES)
def test_bptt_matches_finite_differences(tied, dropout, dropouth, B, T, with_state, repeated, fused, rng):
    """Both training paths: forward -> CrossEntropyLoss -> backward, and the fused
    forward_loss -> backward_loss that train_step uses; the finite differences are
    always taken through forward + CrossEntropyLoss."""
    model = _model(tied=tied, dropout=dropout, dropouth=dropouth, seed=int(rng.integers(1000)))
    ids = np.full((B, T), 7) if repeated else rng.integers(0, 6, (B, T))   # few ids: repeats across rows too
    targets = rng.integers(0, V, (B, T))
    targets[0, 0] = targets[-1, -1]                          # a repeated target
    state = _rand_state(model, B, rng) if with_state else None
    masks = FixedMasks(model)

    masks.restore()
    loss = backprop(model, ids, targets, state, fused)
    grads = {name: g.copy() for name, _, g in model.named_parameters()}
    if dropout > 0:   # the masks really drop something, so the check covers their backward
        assert any((d.mask == 0).any() for d in model.drops)
    assert all(layer._cache is None for layer in model.layers), "backward left a cache behind"

    def f():
        masks.restore()
        out, _ = model.forward(ids, state)
        model.clear_cache()           # f runs forwards only: drop their saved activations
        return ce(out, targets)[0]

    assert f() == pytest.approx(loss, rel=1e-12)   # the fixed masks reproduce the analytic pass
    for name, p in unique_params(model).items():
        check_gradient(f, p, grads[name], rtol=1e-6, eps=1e-5)
    if tied:
        assert model.decoder.params["W"] is model.embedding.params["W"]
        assert model.decoder.grads["W"] is model.embedding.grads["W"]


@pytest.mark.parametrize("tied", [False, True])
def test_forward_loss_equals_forward_then_cross_entropy_in_float32(tied, rng):
    """The training path gives the loss, gradients and final state of the plain path, in float32."""
    model = _model(tied=tied, dtype=np.float32, vocab=300, D=8, H=8)
    ids, targets = rng.integers(0, 300, (4, 7)), rng.integers(0, 300, (4, 7))
    model.zero_grad()
    logits, state = model.forward(ids)
    loss, crit = ce(logits, targets)
    model.backward(crit.backward().reshape(4, 7, 300))
    plain = {n: g.copy() for n, _, g in model.named_parameters()}
    model.zero_grad()
    loss2, state2 = model.forward_loss(ids, targets)
    model.backward_loss()
    assert_allclose(loss2, loss, rtol=1e-6)
    for (h, c), (h2, c2) in zip(state, state2):
        assert_array_equal(h2, h)
        assert_array_equal(c2, c)
    for n, _, g in model.named_parameters():
        assert g.dtype == np.float32
        assert_allclose(g, plain[n], rtol=1e-4, atol=1e-6 * np.abs(plain[n]).max())


def test_forward_loss_rejects_bad_targets(rng):
    model = _model()
    ids = rng.integers(0, V, (2, 3))
    with pytest.raises(RuntimeError, match="needs a forward_loss first"):
        model.backward_loss()
    with pytest.raises(ValueError, match="do not match ids of shape"):
        model.forward_loss(ids, ids[:, :2])
    with pytest.raises(ValueError, match=r"must lie in \[0, 20\)"):
        model.forward_loss(ids, np.full((2, 3), V))
    with pytest.raises(TypeError, match="must be integers"):
        model.forward_loss(ids, ids.astype(float))


def test_gradients_accumulate_and_zero_grad_clears(rng):
    model = _model(tied=True)
    ids, targets = rng.integers(0, V, (2, 4)), rng.integers(0, V, (2, 4))

    def grads_once():
        logits, _ = model.forward(ids)
        _, crit = ce(logits, targets)
        model.backward(crit.backward().reshape(2, 4, V))
        return {n: g.copy() for n, g in ((n, g) for n, _, g in model.named_parameters())}

    model.zero_grad()
    one = grads_once()
    two = grads_once()
    for n in one:
        assert_allclose(two[n], 2 * one[n], rtol=1e-12, atol=1e-15)
    model.zero_grad()
    assert all(not g.any() for _, _, g in model.named_parameters())


def test_two_sequences_in_a_row_leave_nothing_behind(rng):
    """forward/backward on sequence A, then B (other shape) == B alone on a fresh model."""
    a, b = rng.integers(0, V, (3, 5)), rng.integers(0, V, (2, 7))
    ya, yb = rng.integers(0, V, (3, 5)), rng.integers(0, V, (2, 7))
    used, fresh = _model(dropout=0.0), _model(dropout=0.0)

    def step(model, ids, y):
        model.zero_grad()
        logits, state = model.forward(ids)
        logits = logits.copy()
        _, crit = ce(logits, y)
        model.backward(crit.backward().reshape(*ids.shape, V))
        return logits, state, {n: g.copy() for n, _, g in model.named_parameters()}

    step(used, a, ya)
    la, sa, ga = step(used, b, yb)
    lb, sb, gb = step(fresh, b, yb)
    assert_allclose(la, lb, rtol=1e-12, atol=1e-14)
    for (h1, c1), (h2, c2) in zip(sa, sb):
        assert_allclose(h1, h2, rtol=1e-12, atol=1e-14)
        assert_allclose(c1, c2, rtol=1e-12, atol=1e-14)
    for n in gb:
        assert_allclose(ga[n], gb[n], rtol=1e-12, atol=1e-14)
    assert all(layer._cache is None for layer in used.layers)


# ------------------------------------------------------------------ forward, state, predict

def test_forward_shapes_and_logits_buffer_is_reused(rng):
    model = _model(dtype=np.float32)
    ids = rng.integers(0, V, (3, 4))
    logits, state = model.forward(ids)
    assert logits.shape == (3, 4, V) and logits.dtype == np.float32
    assert len(state) == 2 and all(h.shape == (3, 5) and c.shape == (3, 5) for h, c in state)
    first = logits.copy()
    again, _ = model.forward(rng.integers(0, V, (3, 4)))
    assert np.shares_memory(again, logits)                 # documented: copy logits you keep
    other, _ = model.forward(ids[:1])
    assert other.shape == (1, 4, V)
    assert_allclose(other[0], first[0], rtol=1e-6)         # a row does not depend on the batch
    shorter, _ = model.forward(ids[:, :2])                 # fewer steps (train.py --carry varies T):
    assert np.shares_memory(shorter, logits) and shorter.flags.c_contiguous   # the same buffer's front
    assert_allclose(shorter, first[:, :2], rtol=1e-6)
    model.clear_cache()


def test_carrying_state_equals_rereading_the_prefix(rng):
    model = _model().eval()
    ids = rng.integers(0, V, (2, 9))
    full, full_state = model.forward(ids)
    full = full.copy()
    parts, state = [], None
    for lo, hi in ((0, 1), (1, 5), (5, 9)):
        logits, state = model.forward(ids[:, lo:hi], state)
        parts.append(logits.copy())
    assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-10, atol=1e-12)
    for (h1, c1), (h2, c2) in zip(state, full_state):
        assert_allclose(h1, h2, rtol=1e-10, atol=1e-12)
        assert_allclose(c1, c2, rtol=1e-10, atol=1e-12)
    model.clear_cache()


def test_a_given_state_changes_the_output_and_is_checked(rng):
    model = _model().eval()
    ids = rng.integers(0, V, (2, 3))
    zero = model.forward(ids)[0].copy()
    given = model.forward(ids, _rand_state(model, 2, rng))[0].copy()
    assert np.abs(given - zero).max() > 1e-3
    with pytest.raises(ValueError):
        model.forward(ids, _rand_state(model, 2, rng)[:1])          # one pair for two layers
    with pytest.raises(ValueError):
        model.forward(ids, _rand_state(model, 3, rng))               # batch 3 for ids of batch 2
    model.clear_cache()


def test_repeated_ids_give_equal_rows(rng):
    model = _model().eval()
    ids = np.tile(rng.integers(0, V, (1, 5)), (3, 1))                # three identical rows
    logits = model.forward(ids)[0]
    assert_allclose(logits[1], logits[0], rtol=1e-12)
    assert_allclose(logits[2], logits[0], rtol=1e-12)
    model.clear_cache()


@pytest.mark.parametrize("B, T", [(3, 6), (1, 1), (1, 4), (4, 1)])
def test_predict_is_forwards_last_step(B, T, rng):
    model = _model().eval()
    ids = rng.integers(0, V, (B, T))
    scores = model.predict(ids)
    assert scores.shape == (B, V)
    assert_allclose(scores, model.forward(ids)[0][:, -1], rtol=1e-12, atol=1e-14)
    model.clear_cache()
    assert all(layer._cache is None for layer in model.layers)  # predict caches nothing


def test_inference_never_drops_and_keeps_the_mode(rng):
    model = _model(dropout=0.5)
    ids = rng.integers(0, V, (4, 5))
    model.eval()
    a, b = model.predict(ids), model.predict(ids)
    assert_array_equal(a, b)
    model.train()
    assert_array_equal(model.predict(ids), a)                        # no dropout at inference ...
    assert model.training                                            # ... and the mode is restored
    logits, _ = model.forward(ids)                                   # while training forward drops
    assert np.abs(logits[:, -1] - a).max() > 1e-6


@pytest.mark.parametrize("bad, err", bad_ids(V))
def test_bad_ids_raise(bad, err):
    model = _model()
    with pytest.raises(err):
        check_ids(bad, V, "test")
    with pytest.raises(err):
        model.predict(bad)


@pytest.mark.parametrize("kwargs", [dict(vocab_size=1), dict(emsize=0), dict(nhid=0), dict(nlayers=0),
                                    dict(dropout=1.0), dict(dropout=-0.1), dict(dropouth=1.0)])
def test_bad_configuration_raises(kwargs):
    args = dict(vocab_size=V, emsize=4, nhid=5, nlayers=2) | kwargs
    with pytest.raises(ValueError):
        LanguageModel(**args)


# ------------------------------------------------------------------ generate

def _gen_model(seed):
    """Big weights, no decoder bias: the best next word depends on the prefix (not one word always)."""
    model = _model(seed=seed, scale=2.0).eval()
    model.decoder.params["b"][...] = 0
    return model


# decoding with nothing but the choice rule (no bans, no n-gram blocking), as the definitions below
PLAIN = dict(no_repeat_ngram=0, ban_special=False, top_p=None)


def _stepwise(model, inp, K, temperature=0.0, top_k=None, top_p=None, seed=None):
    """The definition: re-read the whole growing sequence with predict, choose from its scores."""
    rng = np.random.default_rng(seed)
    seq = np.asarray(inp)
    for _ in range(K):
        nxt = choose_next(model.predict(seq), temperature, top_k, top_p, rng)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    return seq[:, inp.shape[1]:]


@pytest.mark.parametrize("B, T, K", [(3, 4, 6), (1, 1, 1), (2, 1, 5)])
def test_greedy_generate_is_stepwise_argmax(B, T, K, rng):
    model = _gen_model(3)
    inp = rng.integers(0, V, (B, T))
    out = model.generate(inp, K, temperature=0.0, **PLAIN)
    assert out.shape == (B, K) and out.dtype.kind == "i"
    assert_array_equal(out, _stepwise(model, inp, K))
    # the check has teeth: the best next word depends on the prefix
    assert len(set(model.predict(np.arange(V)[:, None]).argmax(axis=1).tolist())) > 2


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.7, 3, None),
                                                       (1.5, None, 0.6), (2.0, 4, 0.8)])
def test_sampled_generate_follows_the_definition(temperature, top_k, top_p, rng):
    model = _gen_model(4)
    inp = rng.integers(0, V, (4, 3))
    out = model.generate(inp, 8, temperature=temperature, top_k=top_k, top_p=top_p, seed=11,
                         no_repeat_ngram=0, ban_special=False)
    again = model.generate(inp, 8, temperature=temperature, top_k=top_k, top_p=top_p, seed=11,
                           no_repeat_ngram=0, ban_special=False)
    assert_array_equal(out, again)
    assert_array_equal(out, _stepwise(model, inp, 8, temperature, top_k, top_p, seed=11))
    assert not np.array_equal(out, model.generate(inp, 8, temperature=temperature, top_k=top_k, top_p=top_p,
                                                  seed=12, no_repeat_ngram=0, ban_special=False))


def test_generate_top_k_keeps_to_the_k_best(rng):
    model = _gen_model(5)
    inp = rng.integers(0, V, (6, 2))
    out = model.generate(inp, 6, temperature=5.0, top_k=3, seed=0, **PLAIN)   # hot: anything goes but top_k
    seq = inp
    for t in range(out.shape[1]):
        best3 = np.argsort(-model.predict(seq), axis=1)[:, :3]
        assert all(out[r, t] in best3[r] for r in range(len(out)))
        seq = np.concatenate([seq, out[:, t:t + 1]], axis=1)
    greedy = model.generate(inp, 6, temperature=0.0, **PLAIN)
    assert (out != greedy).any()                                     # it did sample, not argmax
    assert_array_equal(model.generate(inp, 6, temperature=5.0, top_k=1, seed=0, **PLAIN), greedy)
    assert_array_equal(model.generate(inp, 6, temperature=5.0, seed=0, no_repeat_ngram=0, ban_special=False,
                                      top_p=1e-9), greedy)


@pytest.mark.parametrize("K", [0, -1, 2.0, None])
def test_generate_rejects_bad_lengths(K, rng):
    with pytest.raises(ValueError):
        _model().generate(rng.integers(0, V, (1, 2)), K)


# ------------------------------------------------------------------ files

def _vocab_words(n=V):
    return np.array([f"w{i}" for i in range(n - 3)] + [UNK, SOS, "<eos>"])


@pytest.mark.parametrize("tied", [False, True])
def test_save_load_round_trip(tmp_path, tied, rng):
    model = _model(tied=tied, dropout=0.3, dtype=np.float32).eval()
    words = _vocab_words()
    path = tmp_path / "m.npz"
    model.save(path, meta={"epoch": 3}, vocab=Vocabulary(words))
    back = models.load(path).eval()
    assert back.config == model.config and back.meta == {"epoch": 3}
    assert_array_equal(back.vocab, words)
    ids = rng.integers(0, V, (3, 5))
    assert_array_equal(back.predict(ids), model.predict(ids))
    if tied:
        assert back.decoder.params["W"] is back.embedding.params["W"]
    with np.load(path) as z:
        names = [k for k in z.files if k.startswith("param/")]
        assert ("param/decoder.W" in names) == (not tied)               # a tied matrix stored once
        n_stored = sum(z[k].size for k in names)
    assert n_stored == sum(p.size for p in unique_params(model).values())


def test_float16_file_moves_predictions_a_little(tmp_path, rng):
    model = _model(dtype=np.float32).eval()
    model.save(tmp_path / "h.npz", float16=True)
    with np.load(tmp_path / "h.npz") as z:
        assert all(z[k].dtype == np.float16 for k in z.files if k.startswith("param/"))
    back = models.load(tmp_path / "h.npz").eval()
    assert back.vocab is None
    ids = rng.integers(0, V, (4, 6))
    a, b = model.predict(ids), back.predict(ids)
    diff = np.abs(a - b).max()
    assert 0 < diff < 1e-2 * np.abs(a).max()


def test_load_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(models.CheckpointError, match="not found"):
        models.load(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(models.CheckpointError):
        models.load(bad)
    _model(dtype=np.float32).save(tmp_path / "ok.npz")
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(models.CheckpointError):
        models.load(tmp_path / "cut.npz")


def test_save_rejects_a_vocabulary_of_the_wrong_size(tmp_path):
    with pytest.raises(ValueError):
        _model().save(tmp_path / "x.npz", vocab=_vocab_words(V - 1))


# ------------------------------------------------------------------ app.predict (the command)

def _saved(tmp_path, vocab=True, seed=0):
    model = _model(dtype=np.float32, seed=seed, scale=1.0, dropout=0.4)   # the command must use eval mode
    path = tmp_path / "tiny.npz"
    model.save(path, vocab=_vocab_words() if vocab else None)
    return path


def _run_predict(argv, capsys):
    from app import predict
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_command_prints_top_words_and_a_continuation(tmp_path, capsys):
    path = _saved(tmp_path)
    code, out, err = _run_predict(["--checkpoint", path, "w1 w2 cat w3", "--words", 7, "--top", 5], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "unknown words (read as <unk>): cat"
    assert lines[1] == "next words after: w1 w2 cat w3"
    rows = [line.split() for line in lines[2:7]]
    probs = [float(p) for p, _ in rows]
    listed = [w for _, w in rows]
    vocab = _vocab_words()
    assert all(w in vocab for w in listed) and len(set(listed)) == 5
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-3
    prompt, cont = lines[7].split(" | ")
    assert prompt == "w1 w2 cat w3"
    assert len(cont.split()) == 7 and all(w in vocab for w in cont.split())
    assert len(lines) == 8

    # the same numbers from the library: softmax of predict on <sos> + prompt (cat -> <unk>)
    model = models.load(path).eval()
    voc = Vocabulary(vocab)
    ids = np.concatenate(([voc.sos_id], voc.encode("w1 w2 <unk> w3".split())))[None]
    z = model.predict(ids)[0].astype(np.float64)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    best = np.argsort(-p)[:5]
    assert listed == vocab[best].tolist()
    assert_allclose(probs, p[best], atol=6e-5)
    assert cont == voc.decode(model.generate(ids, 7))


def test_predict_command_sampling_is_seeded(tmp_path, capsys):
    path = _saved(tmp_path)
    argv = ["--checkpoint", path, "w1", "w2", "--words", 12, "--top", 0, "--temperature", 2.0, "--seed", 5]
    runs = [_run_predict(argv, capsys) for _ in range(2)]
    assert runs[0][0] == 0 and runs[0][1] == runs[1][1]
    assert len(runs[0][1].splitlines()) == 1 and runs[0][1].startswith("w1 w2 | ")
    code, out, _ = _run_predict(argv + ["--top-k", 1], capsys)
    greedy = _run_predict(["--checkpoint", path, "w1 w2", "--words", 12, "--top", 0, "--temperature", 0],
                          capsys)[1]
    assert code == 0 and out == greedy


def test_predict_command_reads_vocab_from_data_dir(tmp_path, capsys):
    path = _saved(tmp_path, vocab=False)
    code, out, err = _run_predict(["--checkpoint", path, "w1"], capsys)
    assert code == 2 and out == "" and err.startswith("error: ") and "--data" in err
    assert len(err.strip().splitlines()) == 1
    np.save(tmp_path / "vocab.npy", _vocab_words())
    code, out, err = _run_predict(["--checkpoint", path, "w1", "--data", tmp_path, "--words", 3], capsys)
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("w1 | ")


@pytest.mark.parametrize("case", ["missing", "corrupt", "empty-prompt", "blank-prompt", "bad-top-p",
                                  "bad-words"])
def test_predict_command_errors_are_one_line(case, tmp_path, capsys):
    path = _saved(tmp_path)
    argv = {"missing": ["--checkpoint", tmp_path / "nope.npz", "w1"],
            "corrupt": ["--checkpoint", tmp_path / "bad.npz", "w1"],
            "empty-prompt": ["--checkpoint", path],
            "blank-prompt": ["--checkpoint", path, "   "],
            "bad-top-p": ["--checkpoint", path, "w1", "--top-p", 0, "--temperature", 1],
            "bad-words": ["--checkpoint", path, "w1", "--words", -2]}[case]
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    code, out, err = _run_predict(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, value", [("--top-p", 0), ("--top-k", 0), ("--beams", 0),
                                         ("--temperature", -1), ("--no-repeat-ngram", -1),
                                         ("--repetition-penalty", 0), ("--length-penalty", "inf")])
def test_predict_command_names_the_bad_decoding_flag(flag, value, tmp_path, capsys):
    code, out, err = _run_predict(["--checkpoint", _saved(tmp_path), "w1", flag, value], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {flag} must be ") and len(err.strip().splitlines()) == 1
