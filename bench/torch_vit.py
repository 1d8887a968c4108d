"""The same Vision Transformer in torch.nn (eager), for the bench and the accuracy anchor.

torch is imported inside the functions only: an optional, benchmark-only dependency (the bench extra).
Shapes: B images, P patch side, N patches, D = d_model, F = d_ff, K classes.

    images (B, 1, 28, 28) -> Conv2d(1, D, P, stride P) (a Linear on each patch) -> (B, N, D)
        -> [cls; X] + positions -> nn.TransformerEncoder(norm_first=True, GELU tanh, batch_first)
        -> LayerNorm -> the class token's row (or the mean) -> Linear(D, K)

models.ViT's initialisation (N(0, 0.02^2) matrices, the head 0) is not copied: torch's own
defaults, as a user of torch.nn would train it; the step's cost does not depend on the values.
"""


def build(cfg, seed=0):
    """The torch.nn ViT for a vision configuration (app.tasks.vision's keys), in train mode."""
    import torch
    from torch import nn
    import torch.nn.functional as F
    torch.manual_seed(seed)
    D, P = cfg["emsize"], cfg["patch"]
    N = (28 // P) ** 2

    class TorchViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patches = nn.Conv2d(1, D, P, stride=P)
            self.cls = nn.Parameter(torch.zeros(1, 1, D).normal_(0, 0.02))
            self.pos = nn.Parameter(torch.zeros(1, N + 1, D).normal_(0, 0.02))
            layer = nn.TransformerEncoderLayer(D, cfg["nhead"], cfg["d_ff"], cfg["dropout"],
                                               activation=lambda x: F.gelu(x, approximate="tanh"),
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, cfg["nlayers"], enable_nested_tensor=False)
            self.ln_f = nn.LayerNorm(D)
            self.head = nn.Linear(D, 10)

        def forward(self, x):                                       # (B, 1, 28, 28) float
            z = self.patches(x).flatten(2).transpose(1, 2)          # (B, N, D)
            z = torch.cat([self.cls.expand(len(z), -1, -1), z], dim=1) + self.pos
            z = self.ln_f(self.blocks(z))
            return self.head(z[:, 0] if cfg["pool"] == "cls" else z.mean(dim=1))
    return TorchViT()


def optimizer(model, cfg):
    """torch's AdamW (or Adam / SGD) with cfg's lr and weight decay."""
    import torch
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    return cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])


def to_input(images, mean, std):
    """uint8 (B, 28, 28) -> normalised float32 tensor (B, 1, 28, 28), as models.ViT.prepare."""
    import torch
    x = torch.tensor(images).float().unsqueeze(1)              # a copy: the IDX arrays are read-only
    return (x / 255 - mean) / std


def step(model, opt, x, y, clip):
    """One training step: forward, cross-entropy, backward, clip, optimizer -> the loss."""
    import torch
    import torch.nn.functional as F
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()
