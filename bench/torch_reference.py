"""The same language model in PyTorch, timed the same way: the comparison the benchmark reports.

torch is imported inside time_torch and nowhere else: it is an optional, benchmark-only dependency.
Shapes: B batch, T time steps, D embedding size, H hidden size, V vocabulary.
"""
import statistics
import time

from .config import layer_sizes


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
            self.decoder = nn.Linear(sizes[-1], V)
            if cfg["tied"]:
                self.decoder.weight = self.embedding.weight

        def forward(self, ids):                          # ids (B, T) -> logits (B, T, V)
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
            X = locked_dropout(X, drop_p[L], self.training)
            return self.decoder(X)

    torch.manual_seed(cfg["seed"])
    model = TorchLM().to(device=device, dtype=torch.float32)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    return model, opt_cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])


def time_torch(cfg, batches, variants):
    """-> (result dict or None, note). Imports torch here and nowhere else."""
    try:
        import torch
        import torch.nn.functional as F
    except Exception as err:  # ImportError, or a broken install
        return None, f"PyTorch not importable ({type(err).__name__}: {err})"
    device = "cpu"
    if cfg["backend"] == "cupy":
        if not torch.cuda.is_available():
            return None, f"PyTorch {torch.__version__} has no CUDA device: not timed beside --backend cupy"
        device = "cuda"
    torch.set_num_threads(cfg["threads"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    clip, V = cfg["clip"], cfg["vocab"]
    result = dict(version=torch.__version__, device=device, threads=torch.get_num_threads(),
                  tokens_per_s={}, step_ms={})
    for variant in variants:
        model, opt = build_torch(torch, cfg, variant, device)
        model.train()
        params = list(model.parameters())
        step_ms = []
        for i in range(cfg["warmup"] + cfg["steps"]):
            x, y = batches[i % len(batches)]
            sync()
            t0 = time.perf_counter()
            opt.zero_grad()
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            logits = model(x)                                           # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
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
