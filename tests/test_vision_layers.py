"""The Vision Transformer's layers and the model: PatchEmbedding, ClassToken, the bidirectional
TransformerBlock (with key padding) and models.ViT, each backward against central differences in
float64, for every input and every parameter, on random shapes and seeds.

Shapes: B images, C channels, H x W pixels, P patch side, N patches, D d_model, S positions.
Loss L = sum(Y * G) for a random G (so dL/dY = G), or the ViT's own cross-entropy.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from models import ViT
from mytorch.gradcheck import check_gradient, numerical_grad
from mytorch.nn import ClassToken, PatchEmbedding, TransformerBlock
from mytorch.nn.module import detached
from mytorch.nn.patches import from_patches, to_patches


def _check_params(layer, loss, rng, rtol=1e-6):
    """Every parameter of layer (and its children) against central differences of loss(). The key bias
    b_k moves every score of a query alike, which softmax ignores: its gradient is exactly 0 (no relative
    error exists), so both sides are checked to be 0."""
    for name, p, g in layer.named_parameters():
        if name.endswith("b_k"):
            assert np.all(np.abs(g) < 1e-12) and np.all(np.abs(numerical_grad(loss, p)) < 1e-8)
        else:
            check_gradient(loss, p, g.copy(), rtol=rtol, rng=rng)


def test_patches_are_the_p_by_p_squares_row_by_row(rng):
    B, C, P = 2, 3, 2
    images = rng.standard_normal((B, C, 4, 6))
    patches = to_patches(images, P)                                   # (B, 6, C P P)
    assert patches.shape == (B, 6, C * P * P)
    # patch n = i * (W / P) + j: rows i P .., columns j P .., channel by channel
    for n, (i, j) in enumerate((i, j) for i in range(2) for j in range(3)):
        want = images[:, :, i * P:(i + 1) * P, j * P:(j + 1) * P].reshape(B, -1)
        assert_allclose(patches[:, n], want)
    assert_allclose(from_patches(patches, images.shape, P), images)


@pytest.mark.parametrize("seed", range(3))
def test_patch_embedding_backward(seed):
    rng = np.random.default_rng(seed)
    P, C = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    H, W = P * int(rng.integers(1, 4)), P * int(rng.integers(1, 4))
    B, D = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    layer = PatchEmbedding(P, C, D, dtype=np.float64, rng=rng)
    X = rng.standard_normal((B, C, H, W))
    G = rng.standard_normal((B, (H // P) * (W // P), D))
    loss = lambda: float(np.sum(layer.forward(X) * G))                  # noqa: E731
    layer.forward(X)
    dX = layer.backward(G)
    assert dX.shape == X.shape
    check_gradient(loss, X, dX)
    _check_params(layer, loss, rng)


def test_patch_embedding_refuses_images_that_do_not_divide(rng):
    layer = PatchEmbedding(4, 1, 8)
    with pytest.raises(ValueError, match="do not divide into 4 x 4 patches"):
        layer.forward(np.zeros((2, 1, 10, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, H, W\)"):
        layer.forward(np.zeros((2, 8, 8), np.float32))


@pytest.mark.parametrize("seed", range(3))
def test_class_token_backward(seed):
    rng = np.random.default_rng(seed)
    B, N, D = (int(n) for n in rng.integers(1, 5, 3))
    layer = ClassToken(D, dtype=np.float64, rng=rng)
    layer.params["cls"][...] = rng.standard_normal(D)
    X = rng.standard_normal((B, N, D))
    G = rng.standard_normal((B, N + 1, D))
    Y = layer.forward(X)
    assert Y.shape == (B, N + 1, D)
    assert_allclose(Y[:, 0], np.broadcast_to(layer.params["cls"], (B, D)))
    assert_allclose(Y[:, 1:], X)
    loss = lambda: float(np.sum(layer.forward(X) * G))                  # noqa: E731
    dX = layer.backward(G)
    check_gradient(loss, X, dX)
    _check_params(layer, loss, rng)


@pytest.mark.parametrize("seed", range(3))
def test_bidirectional_block_backward_with_key_padding(seed):
    """Every position sees every unpadded one (a later position changes an earlier output); padded keys
    are invisible; the backward of input and every parameter against central differences."""
    rng = np.random.default_rng(seed)
    h = int(rng.integers(1, 3))
    B, S, D = int(rng.integers(1, 4)), int(rng.integers(2, 6)), h * int(rng.integers(3, 5))   # D >= 3: see LN
    block = TransformerBlock(D, h, causal=False, d_ff=int(rng.integers(2, 9)), dtype=np.float64, rng=rng)
    for _, p, _ in block.named_parameters():
        p[...] = rng.standard_normal(p.shape) * 0.5
    pad = np.zeros((B, S), dtype=bool)
    pad[0, -1] = S > 1 and rng.random() < 0.7
    X = rng.standard_normal((B, S, D))
    G = rng.standard_normal((B, S, D))
    Y = block.forward(X, key_padding_mask=pad)
    X2 = X.copy()
    X2[:, -1] += rng.standard_normal(D)                               # (a constant would vanish in LN)
    Y2 = detached(block, training=False).forward(X2, key_padding_mask=pad)
    if not pad[0, -1]:
        assert not np.allclose(Y2[0, 0], Y[0, 0])                      # position 0 sees the last one
    else:
        assert_allclose(Y2[0, :-1], Y[0, :-1], rtol=1e-12)             # a padded key is seen by none
    loss = lambda: float(np.sum(block.forward(X, key_padding_mask=pad) * G))   # noqa: E731
    block.forward(X, key_padding_mask=pad)
    dX = block.backward(G)
    check_gradient(loss, X, dX)
    _check_params(block, loss, rng)


def _tiny_vit(rng, pool, dropout=0.0):
    h = int(rng.integers(1, 3))
    m = ViT(image_size=8, channels=1, patch=int(rng.choice([2, 4])), num_classes=int(rng.integers(2, 5)),
            d_model=3 * h, nhead=h, nlayers=int(rng.integers(1, 3)), d_ff=int(rng.integers(2, 7)),
            pool=pool, dropout=dropout, seed=int(rng.integers(1000)), dtype=np.float64)
    for _, p, _ in m.named_parameters():            # away from the init (the head starts at 0)
        p[...] = rng.standard_normal(p.shape) * 0.5
    return m


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("seed", range(2))
def test_vit_backward_of_its_loss_for_the_images_and_every_parameter(pool, seed):
    rng = np.random.default_rng(seed + (10 if pool == "mean" else 0))
    m = _tiny_vit(rng, pool)
    B = int(rng.integers(1, 4))
    X = rng.standard_normal((B, 1, 8, 8))
    y = rng.integers(0, m.num_classes, B)

    def loss():
        return m.loss.forward(m.forward(X), y)
    m.zero_grad()
    loss()
    dX = m.backward(m.loss.backward())
    check_gradient(loss, X, dX)
    _check_params(m, loss, rng)


def test_vit_predict_with_tta_averages_the_log_probabilities_of_the_ten_views(rng):
    from dataset.images import tta_views
    m = _tiny_vit(rng, "cls")
    images = rng.integers(0, 256, (5, 8, 8)).astype(np.uint8)
    logp = np.mean([np.log(m.predict(view).astype(np.float64)) for view in tta_views(images)], axis=0)
    want = np.exp(logp - logp.max(1, keepdims=True))
    probs = m.predict(images, batch_size=2, tta=True)
    assert probs.dtype == np.float32 and probs.shape == (5, m.num_classes)
    assert_allclose(probs, want / want.sum(1, keepdims=True), rtol=1e-4)
    assert not np.allclose(probs, m.predict(images), rtol=1e-3)       # the views do change the answer


@pytest.mark.parametrize("fast_tier", ["1", "0"])
def test_vit_predict_is_softmax_of_the_training_forward_and_leaves_a_pending_backward_alone(
        rng, fast_tier, monkeypatch):
    monkeypatch.setenv("MYTORCH_FAST", fast_tier)                      # the plain and the fast blocks
    m = _tiny_vit(rng, "cls")
    images = rng.integers(0, 256, (5, 8, 8)).astype(np.uint8)
    others = rng.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, m.num_classes, 5)
    probs = m.predict(images, batch_size=2)                            # in chunks of 2
    logits = m.forward(m.prepare(images))
    want = np.exp(logits - logits.max(1, keepdims=True))
    assert_allclose(probs, want / want.sum(1, keepdims=True), rtol=1e-5)
    assert probs.dtype == np.float32 and probs.shape == (5, m.num_classes)
    assert_allclose(probs.sum(1), 1, rtol=1e-6)
    m.zero_grad()
    m.forward_loss(images, labels)
    m.predict(others)                                                  # other images, between the two
    m.attention(others)
    m.backward_loss()
    grads = [g.copy() for _, _, g in m.named_parameters()]
    m.zero_grad()
    m.forward_loss(images, labels)
    m.backward_loss()
    for a, (name, _, b) in zip(grads, m.named_parameters()):
        assert_allclose(a, b, rtol=1e-12, err_msg=name)
    S = 1 + (8 // m.config["patch"]) ** 2
    assert m.attention(images[:2]).shape == (2, m.config["nhead"], S, S)


def test_vit_rejects_what_it_cannot_read():
    m = ViT(image_size=8, patch=4, num_classes=3, d_model=4, nhead=2, nlayers=1, d_ff=4)
    with pytest.raises(TypeError, match="must be uint8"):
        m.predict(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 8, 8\) or"):
        m.predict(np.zeros((2, 9, 9), np.uint8))
    with pytest.raises(ValueError, match="not a multiple of patch"):
        ViT(image_size=8, patch=3)
    with pytest.raises(ValueError, match="pool must be"):
        ViT(image_size=8, patch=4, pool="max")


def test_dropout_masks_train_and_eval_is_deterministic(rng):
    m = _tiny_vit(rng, "cls", dropout=0.3)
    images = rng.integers(0, 256, (4, 8, 8)).astype(np.uint8)
    m.train()
    a = m.forward(m.prepare(images))
    b = m.forward(m.prepare(images))
    assert not np.allclose(a, b)
    m.eval()
    assert_allclose(m.forward(m.prepare(images)), m.forward(m.prepare(images)))
    assert_allclose(m.predict(images), m.predict(images))


def test_vit_label_smoothing_is_the_smoothed_cross_entropy_of_its_logits(rng):
    images = rng.integers(0, 256, (5, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 3, 5)
    model = ViT(image_size=8, patch=4, num_classes=3, d_model=8, nhead=2, nlayers=1, d_ff=8,
                label_smoothing=0.2, seed=1, dtype=np.float64)
    model.head.params["W"][...] = rng.standard_normal(model.head.params["W"].shape)
    loss, _ = model.forward_loss(images, labels)
    logp = np.log(model.predict(images).astype(np.float64))
    q = np.full((5, 3), 0.2 / 3)
    q[np.arange(5), labels] += 0.8
    assert loss == pytest.approx(-(q * logp).sum(axis=1).mean(), rel=1e-5)
    assert model.config["label_smoothing"] == 0.2
