"""The baselines of the CPU benchmarks, written as a PyTorch user would write
them: BAT's ViT (nn.Linear, nn.LayerNorm, scaled_dot_product_attention, the
sigmoid gate), the CGP probe on its frozen all-layer features, the BAT
pretraining step's three networks (student on the kept patches, decoder on
all patches, EMA teacher), and the log-mel frontend of torchaudio
(`MelSpectrogram` + `AmplitudeToDB`, or the same operations in torch when
torchaudio is not installed beside this torch). Same shapes and FLOPs as
keras-bat's models; benchmark-only code.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """BAT's post-norm block: x = norm1(x + attn(x)); x = norm2(x + mlp(x))."""

    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.gate = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = self.norm1(x + self.proj(attended * torch.sigmoid(self.gate(x))))
        return self.norm2(x + self.fc2(F.gelu(self.fc1(x))))


def sincos_table(dim, freq_patches, time_patches):
    """2-D sine-cosine positions, time-major (as keras-bat's table is laid out)."""
    def one_axis(positions, width):
        omega = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2))
        angles = positions.double()[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    t, f = torch.meshgrid(torch.arange(time_patches), torch.arange(freq_patches), indexing="ij")
    return torch.cat([one_axis(t.reshape(-1), dim // 2), one_axis(f.reshape(-1), dim // 2)], dim=1).float()


class ViT(nn.Module):
    """BAT's ViT over a spectrogram `(batch, frames, 128)`: returns the class
    tokens `(batch, depth, dim)` and patch tokens `(batch, depth, T, F, dim)` of
    every block."""

    def __init__(self, dim=768, depth=12, heads=12, num_mels=128, patch=16, time_patches=64):
        super().__init__()
        self.patch, self.freq_patches = patch, num_mels // patch
        self.patch_embed = nn.Conv2d(1, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("positions", sincos_table(dim, self.freq_patches, time_patches)[None])
        self.pre_norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))

    def embed(self, spectrogram):
        """Patch tokens with positions `(batch, T * F, dim)`, time-major."""
        patches = self.patch_embed(spectrogram[:, None])  # B, D, T, F
        tokens = patches.flatten(2).transpose(1, 2)
        return tokens + self.positions[:, : tokens.shape[1]]

    def run_blocks(self, tokens, blocks=None):
        x = self.pre_norm(tokens)
        outputs = []
        for block in blocks or self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, spectrogram):
        tokens = self.embed(spectrogram)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        outputs = torch.stack(self.run_blocks(torch.cat([cls, tokens], dim=1)), dim=1)  # B, L, 1 + N, D
        time_patches = spectrogram.shape[1] // self.patch
        return outputs[:, :, 0], outputs[:, :, 1:].reshape(*outputs.shape[:2], time_patches, self.freq_patches, -1)


class CGPProbe(nn.Module):
    """Convex gated probing: softmax layer gate, cosine similarity to
    prototypes, [min, cls, max] pooling, dropout, linear."""

    def __init__(self, depth, dim, prototypes, classes):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(depth))
        self.prototypes = nn.Parameter(torch.randn(prototypes, dim) * 0.02)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(3 * prototypes, classes)

    def forward(self, cls_tokens, patch_tokens):
        gate = torch.softmax(self.layer_logits, 0)
        patches = torch.einsum("bltfd,l->btfd", F.normalize(patch_tokens, dim=-1), gate).flatten(1, 2)
        cls = torch.einsum("bld,l->bd", F.normalize(cls_tokens, dim=-1), gate)
        prototypes = F.normalize(self.prototypes, dim=-1)
        similarity = patches @ prototypes.T  # B, N, P
        pooled = torch.stack([similarity.amin(1), cls @ prototypes.T, similarity.amax(1)], dim=-1)
        return self.fc(self.dropout(pooled.flatten(1)))


def features_step(batch, frames):
    """All-layer features of a frozen ViT-B, no gradient."""
    model = ViT(time_patches=frames // 16).eval()
    x = torch.rand(batch, frames, 128)

    def step():
        with torch.no_grad():
            return model(x)

    return step


def probe_step(batch, frames, prototypes, classes):
    """One CGP training step (AdamW) on a frozen ViT-B."""
    encoder = ViT(time_patches=frames // 16).eval().requires_grad_(False)
    probe = CGPProbe(12, 768, prototypes, classes)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    x = torch.rand(batch, frames, 128)
    y = (torch.rand(batch, classes) < 0.05).float()

    def step():
        with torch.no_grad():
            cls, patches = encoder(x)
        loss = F.binary_cross_entropy_with_logits(probe(cls, patches), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def pretrain_step(dim, depth, heads, decoder_depth, frames, batch, views, mask_ratio=0.8):
    """One BAT pretraining step: the student encodes each view's kept patches,
    the decoder (mask tokens in place of the removed patches) predicts the EMA
    teacher's layer-averaged, instance-normalised targets; AdamW and the EMA update."""
    time_patches = frames // 16
    student = ViT(dim, depth, heads, time_patches=time_patches)
    teacher = ViT(dim, depth, heads, time_patches=time_patches).requires_grad_(False)
    teacher.load_state_dict(student.state_dict())
    decoder = nn.ModuleList(Block(dim, heads) for _ in range(decoder_depth))
    mask_token = nn.Parameter(torch.zeros(dim))
    head = nn.Linear(dim, dim)
    parameters = [*student.parameters(), *decoder.parameters(), mask_token, *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    x = torch.rand(batch, frames, 128)
    patches = time_patches * 8
    kept = int(patches * (1 - mask_ratio))

    def step():
        with torch.no_grad():
            tokens = teacher.embed(x)
            cls = teacher.cls_token.expand(batch, -1, -1)
            layers = teacher.run_blocks(torch.cat([cls, tokens], dim=1))
            targets = torch.stack([F.instance_norm(h[:, 1:].transpose(1, 2)).transpose(1, 2) for h in layers]).mean(0)
            targets = F.layer_norm(targets, (dim,)).repeat_interleave(views, 0)  # B * V, N, D
        tokens = student.embed(x).repeat_interleave(views, 0)  # B * V, N, D
        keep = torch.rand(batch * views, patches).argsort(1)[:, :kept].sort(1).values
        kept_tokens = tokens.gather(1, keep[..., None].expand(-1, -1, dim))
        cls = student.cls_token.expand(batch * views, -1, -1)
        encoded = student.run_blocks(torch.cat([cls, kept_tokens], dim=1))[-1]
        full = mask_token.expand(batch * views, patches, dim).scatter(
            1, keep[..., None].expand(-1, -1, dim), encoded[:, 1:])
        for block in decoder:
            full = block(full)
        removed = torch.ones(batch * views, patches).scatter(1, keep, 0.0)
        local_loss = ((head(full) - targets) ** 2).mean(-1).mul(removed).sum() / removed.sum()
        global_loss = ((encoded[:, 0] - targets.mean(1)) ** 2).mean()
        loss = local_loss + global_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters()):
                t.lerp_(s, 1 - 0.9998)
        return loss

    return step


def log_mel_step(clips, seconds, top_db=80.0):
    """torchaudio's MelSpectrogram (power 2, HTK mels, periodic Hann) and
    AmplitudeToDB(top_db) with BAT's per-clip min-max; the same operations in
    torch when torchaudio is missing. Returns `(step, implementation name)`."""
    waveforms = torch.randn(clips, int(seconds * 16000))
    try:
        import torchaudio

        mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=160, n_mels=128,
                                                   mel_scale="htk", power=2.0)
        to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=top_db)
        name = f"torchaudio {torchaudio.__version__}"

        def spectrogram():
            return to_db(mel(waveforms))
    except ImportError:  # torchaudio's computation, written out
        from keras_bat.layers.frontend import htk_mel_filter_bank

        bank = torch.as_tensor(htk_mel_filter_bank(513, 128, 16000, 0.0, None))
        window = torch.hann_window(1024)
        name = "torch (torchaudio's MelSpectrogram + AmplitudeToDB; torchaudio not installed)"

        def spectrogram():
            stft = torch.stft(waveforms, 1024, 160, window=window, center=True, pad_mode="reflect",
                              return_complex=True)
            mel = torch.matmul(stft.abs().pow(2).transpose(1, 2), bank).transpose(1, 2)
            db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
            return torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - top_db)

    def step():
        with torch.no_grad():
            db = spectrogram()
            low, high = db.amin(dim=(1, 2), keepdim=True), db.amax(dim=(1, 2), keepdim=True)
            return (db - low) / (high - low + 1e-8)

    return step, name
