"""The same language model in PyTorch, timed the same way: the comparison the benchmark reports.

torch is imported inside time_torch and nowhere else: it is an optional, benchmark-only dependency.
Shapes: B batch, T time steps, D embedding size (d_model), H hidden size, V vocabulary, h heads,
d_k = D / h.

LSTM variants: "lstmcell" (a Python loop over nn.LSTMCell, as the notebook), "lstm" (nn.LSTM).
Transformer variants (models.TransformerLM's architecture, eager mode): "transformer" (the attention
written out as mytorch computes it: four D x D products with biases, Q K^T / sqrt(d_k), a causal mask,
softmax, dropout on the weights, A V) and "mha" (nn.MultiheadAttention(batch_first=True), a causal
attn_mask: one packed (3D, D) input product and PyTorch's fused attention kernel).
"""
import math
import statistics
import time

from .config import is_transformer, layer_sizes


def OutputLayer(torch, D, cfg):
    """The output layer and its loss, as mytorch's: nn.Linear(D, V) + F.cross_entropy, or with
    --adaptive nn.AdaptiveLogSoftmaxWithLoss(D, V, cutoffs, div_value) (its own loss, no bias in the
    head, as mytorch's default). .loss(X (B, T, D), targets (B, T)) -> the mean cross-entropy."""
    nn, F = torch.nn, torch.nn.functional
    V = cfg["vocab"]

    class Output(nn.Module):
        def __init__(self):
            super().__init__()
            if cfg.get("adaptive"):
                self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(D, V, list(cfg["adaptive"]),
                                                              div_value=cfg.get("div_value", 4.0))
            else:
                self.decoder = nn.Linear(D, V)

        def loss(self, X, targets):
            if cfg.get("adaptive"):
                return self.adaptive(X.reshape(-1, D), targets.reshape(-1)).loss
            return F.cross_entropy(self.decoder(X).reshape(-1, V), targets.reshape(-1))
    return Output()


def build_torch(torch, cfg, variant, device):
    """The same language model in PyTorch (float32), and its optimizer."""
    nn = torch.nn
    sizes, L, V = layer_sizes(cfg), cfg["nlayers"], cfg["vocab"]
    drop_p = [cfg["dropout"] if k in (0, L) else cfg["dropouth"] for k in range(L + 1)]

    def locked_dropout(X, p, training):
        """One (B, 1, D) mask per sequence, as mytorch's LockedDropout."""
        if not training or p == 0:
            return X
        return X * X.new_empty(X.shape[0], 1, X.shape[2]).bernoulli_(1 - p).div_(1 - p)

    class TorchLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, cfg["emsize"])
            if variant == "lstmcell":
                self.rnns = nn.ModuleList(nn.LSTMCell(sizes[k], sizes[k + 1]) for k in range(L))
            else:
                self.rnns = nn.ModuleList(nn.LSTM(sizes[k], sizes[k + 1], batch_first=True) for k in range(L))
            self.head = OutputLayer(torch, sizes[-1], cfg)
            if cfg["tied"]:
                self.head.decoder.weight = self.embedding.weight

        def loss(self, ids, targets):                    # ids, targets (B, T) -> mean cross-entropy
            return self.head.loss(self(ids), targets)

        def forward(self, ids):                          # ids (B, T) -> top-layer outputs (B, T, H)
            B, T = ids.shape
            X = self.embedding(ids)                      # (B, T, D)
            for k, rnn in enumerate(self.rnns):
                X = locked_dropout(X, drop_p[k], self.training)
                if variant == "lstmcell":                # the notebook's loop over time
                    h = c = X.new_zeros(B, sizes[k + 1])
                    hs = []
                    for t in range(T):
                        h, c = rnn(X[:, t], (h, c))
                        hs.append(h)
                    X = torch.stack(hs, dim=1)           # (B, T, H)
                else:
                    X, _ = rnn(X)                        # (B, T, H)
            return locked_dropout(X, drop_p[L], self.training)

    torch.manual_seed(cfg["seed"])
    model = TorchLM().to(device=device, dtype=torch.float32)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    return model, opt_cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])


def build_torch_transformer(torch, cfg, variant, device):
    """TransformerLM in PyTorch (float32): token embedding + learned positions, dropout, pre-LN blocks
    (x = x + drop(attn(ln1(x))); x = x + drop(mlp(ln2(x))), GELU tanh, D -> 4D -> D), final LayerNorm,
    the projection tied to the embedding with its own bias; GPT-2's init, as TransformerLM's. And its
    optimizer."""
    nn, F = torch.nn, torch.nn.functional
    V, D, h, L, T, p = cfg["vocab"], cfg["emsize"], cfg["nhead"], cfg["nlayers"], cfg["bptt"], cfg["dropout"]

    class Attention(nn.Module):
        """Causal multi-head attention, written out: (B, T, D) -> (B, T, D)."""

        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
            self.drop = nn.Dropout(p)

        def forward(self, X, mask):                                     # mask (T, T), True: hidden
            B = X.shape[0]

            def split(Z):                                               # (B, T, D) -> (B, h, T, d_k)
                return Z.view(B, T, h, D // h).transpose(1, 2)
            Q, K, Vh = split(self.q(X)), split(self.k(X)), split(self.v(X))
            S = (Q @ K.transpose(-2, -1)) * (1.0 / math.sqrt(D // h))  # (B, h, T, T)
            A = self.drop(torch.softmax(S.masked_fill(mask, float("-inf")), dim=-1))
            return self.o((A @ Vh).transpose(1, 2).reshape(B, T, D))

    class MHA(nn.Module):
        """nn.MultiheadAttention, causal: (B, T, D) -> (B, T, D)."""

        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(D, h, dropout=p, batch_first=True)

        def forward(self, X, mask):
            return self.mha(X, X, X, attn_mask=mask, need_weights=False, is_causal=True)[0]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.attn = MHA() if variant == "mha" else Attention()
            self.fc, self.proj = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
            self.drop1, self.drop2 = nn.Dropout(p), nn.Dropout(p)

        def forward(self, X, mask):
            X = X + self.drop1(self.attn(self.ln1(X), mask))
            return X + self.drop2(self.proj(F.gelu(self.fc(self.ln2(X)), approximate="tanh")))

    class TorchTransformerLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, D)
            self.pos = nn.Parameter(torch.empty(T, D))                  # learned positions, context T
            self.drop = nn.Dropout(p)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(D)
            self.head = OutputLayer(torch, D, cfg)
            if not cfg.get("adaptive"):
                self.head.decoder.weight = self.embedding.weight        # tied, with its own bias
            self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).triu(1), persistent=False)
            std, resid = 0.02, 0.02 / math.sqrt(2 * L)
            for w in (self.embedding.weight, self.pos):
                nn.init.normal_(w, 0.0, std)
            for b in self.blocks:
                a = b.attn.mha if variant == "mha" else b.attn
                w_in = [a.in_proj_weight] if variant == "mha" else [a.q.weight, a.k.weight, a.v.weight]
                for w in w_in + [b.fc.weight]:
                    nn.init.normal_(w, 0.0, std)
                for w in ((a.out_proj if variant == "mha" else a.o).weight, b.proj.weight):
                    nn.init.normal_(w, 0.0, resid)                      # the two writing into the stream
            for name, w in self.named_parameters():
                if name.endswith("bias") and not name.startswith("head.adaptive"):  # LayerNorm beta too
                    nn.init.zeros_(w)

        def loss(self, ids, targets):                                   # ids, targets (B, T) -> mean CE
            return self.head.loss(self(ids), targets)

        def forward(self, ids):                                         # ids (B, T) -> outputs (B, T, D)
            X = self.drop(self.embedding(ids) + self.pos[:ids.shape[1]])  # (B, T, D)
            for block in self.blocks:
                X = block(X, self.mask)
            return self.ln_f(X)

    torch.manual_seed(cfg["seed"])
    model = TorchTransformerLM().to(device=device, dtype=torch.float32)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    return model, opt_cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])


def time_torch(cfg, batches, variants):
    """-> (result dict or None, note). Imports torch here and nowhere else."""
    try:
        import torch
    except Exception as err:  # ImportError, or a broken install
        return None, f"PyTorch not importable ({type(err).__name__}: {err})"
    device = "cpu"
    if cfg["backend"] == "cupy":
        if not torch.cuda.is_available():
            return None, f"PyTorch {torch.__version__} has no CUDA device: not timed beside --backend cupy"
        device = "cuda"
    torch.set_num_threads(cfg["threads"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    clip = cfg["clip"]
    result = dict(version=torch.__version__, device=device, threads=torch.get_num_threads(),
                  tokens_per_s={}, step_ms={})
    for variant in variants:
        build = build_torch_transformer if is_transformer(cfg) else build_torch
        model, opt = build(torch, cfg, variant, device)
        model.train()
        params = list(model.parameters())
        step_ms = []
        for i in range(cfg["warmup"] + cfg["steps"]):
            x, y = batches[i % len(batches)]
            sync()
            t0 = time.perf_counter()
            opt.zero_grad()
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            loss = model.loss(x, y)                                     # the projection + cross-entropy
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            elif hasattr(torch.nn.utils, "get_total_norm"):           # the norm only, as mytorch with clip 0
                torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            else:
                torch.nn.utils.clip_grad_norm_(params, float("inf"))
            opt.step()
            loss.item()                                                  # train.py reads the loss each step
            sync()
            if i >= cfg["warmup"]:
                step_ms.append((time.perf_counter() - t0) * 1e3)
        median = statistics.median(step_ms)
        result["step_ms"][variant] = median
        result["tokens_per_s"][variant] = cfg["tokens_per_step"] / (median / 1e3)
        del model, opt, params
    result["fastest"] = max(result["tokens_per_s"], key=result["tokens_per_s"].get)
    return result, None
