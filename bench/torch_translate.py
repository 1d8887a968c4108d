"""The same encoder-decoder in torch.nn (eager), for the bench and the BLEU anchor.

torch is imported inside the functions only: an optional, benchmark-only dependency (the bench extra).
Shapes: B sentences, S source tokens, T target tokens, D = d_model, V subwords.

    src (B, S) -> Embedding * sqrt(D) + sin/cos positions -> nn.Transformer(norm_first=True, GELU tanh,
    batch_first; its encoder and decoder end in a LayerNorm) with the source's padding mask and a causal
    target mask -> Linear tied to the Embedding -> logits (B, T, V)
    loss: F.cross_entropy(label_smoothing, ignore_index=PAD), the mean over the target's real tokens

The embedding is one matrix for both languages and (tied) the output projection, as models.Translator's;
nn.Transformer's own initialisation elsewhere, as a user of torch.nn would train it.
"""
import math

from dataset.subwords import BOS, EOS, PAD


def build(cfg, vocab_size, seed=0):
    """The torch.nn translator for a translation configuration (app.tasks.translate's keys), train mode."""
    import torch
    from torch import nn
    import torch.nn.functional as F
    torch.manual_seed(seed)
    D = cfg["emsize"]

    class TorchTranslator(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, D)
            nn.init.normal_(self.embed.weight, 0.0, D ** -0.5)
            self.core = nn.Transformer(D, cfg["nhead"], cfg["enc_layers"], cfg["dec_layers"], cfg["d_ff"],
                                       cfg["dropout"], activation=lambda x: F.gelu(x, approximate="tanh"),
                                       batch_first=True, norm_first=True)
            self.out = nn.Linear(D, vocab_size)
            if cfg["tied"]:
                self.out.weight = self.embed.weight
            nn.init.zeros_(self.out.bias)
            self.drop = nn.Dropout(cfg["dropout"])
            pos = torch.arange(512, dtype=torch.float64)[:, None]
            angle = pos / 10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
            table = torch.zeros(512, D, dtype=torch.float64)
            table[:, 0::2], table[:, 1::2] = torch.sin(angle), torch.cos(angle)
            self.register_buffer("pos", table.float())

        def embed_ids(self, ids):
            return self.drop(self.embed(ids) * math.sqrt(D) + self.pos[:ids.shape[1]])

        def encode(self, src):
            pad = src == PAD
            return self.core.encoder(self.embed_ids(src), src_key_padding_mask=pad), pad

        def decode(self, y_in, memory, pad):
            T = y_in.shape[1]
            causal = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
            h = self.core.decoder(self.embed_ids(y_in), memory, tgt_mask=causal, tgt_is_causal=True,
                                  memory_key_padding_mask=pad)
            return self.out(h)                                         # (B, T, V)

        def forward(self, src, y_in):
            memory, pad = self.encode(src)
            return self.decode(y_in, memory, pad)
    return TorchTranslator()


def optimizer(model, cfg):
    """torch's AdamW (or Adam / SGD) with cfg's lr and weight decay."""
    import torch
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    return cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])


def step(model, opt, x, y, cfg):
    """One training step on a dataset.pairs batch (x (B, S), y (B, T + 1) int32): forward, label-smoothed
    cross-entropy, backward, clip, optimizer -> the loss."""
    import torch
    import torch.nn.functional as F
    x, y = torch.from_numpy(x).long(), torch.from_numpy(y).long()
    opt.zero_grad(set_to_none=True)
    logits = model(x, y[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1),
                           ignore_index=PAD, label_smoothing=cfg["label_smoothing"])
    loss.backward()
    if cfg["clip"]:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
    opt.step()
    return loss.item()


def greedy(model, x, max_len=None):
    """Greedy decoding of a batch x (B, S) (no KV cache: the decoder re-reads the prefix) -> id lists."""
    import torch
    model.eval()
    with torch.no_grad():
        src = torch.from_numpy(x).long()
        memory, pad = model.encode(src)
        limit = max_len or int(1.5 * x.shape[1]) + 10
        y = torch.full((len(x), 1), BOS, dtype=torch.long)
        done = torch.zeros(len(x), dtype=torch.bool)
        for _ in range(limit):
            nxt = model.decode(y, memory, pad)[:, -1].argmax(-1)
            nxt[done] = PAD
            y = torch.cat([y, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if done.all():
                break
    model.train()
    out = []
    for row in y[:, 1:].tolist():
        row = row[:row.index(EOS)] if EOS in row else row
        out.append([i for i in row if i > EOS])
    return out
