"""A tiny video Vision Transformer over face clips (tubelet tokens) and its masked-autoencoder.

The encoder follows ViViT's tubelet embedding (Arnab et al. 2021, "ViViT: A Video Vision
Transformer", ICCV) and the plain pre-norm ViT block (Dosovitskiy et al. 2021, "An Image is
Worth 16x16 Words", ICLR); it is pretrained by VideoMAE's masked reconstruction with tube
masking (Tong et al. 2022, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training", NeurIPS), see :mod:`export.pretrain`.

Sizes come in presets (:data:`ENCODER_PRESETS`). ``tiny`` is the issue-4 contract's: a clip of
8 RGB 32x32 face crops, tubelets of 2x8x8 pixels, so 4 (time) x 4 x 4 (space) = 64 tokens of
dimension 64, 4 blocks of 4 heads (18 M multiply-accumulates). ``small`` - the default bundle's
- reads 64x64 crops in 2x16x16 tubelets (the same 64 tokens, four times the pixels each) with
ViT-Tiny's width (dimension 192, 3 heads of 64) over 4 blocks (148 M multiply-accumulates): a
face crop of 32 pixels loses most of an expression, and a model whose matrix products are a
tenth of its time gains nothing from INT8 (docs/QUANTIZATION.md). Everything is
written with matmul, softmax, LayerNorm, Conv and reshapes of fixed token counts so that it
exports to ONNX opset 17 with standard operators only (no fused attention kernel).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from firmware_bridge.errors import BadInputError, ConfigError

# Face crops arrive in [0, 1]; centring them keeps the first layer's activations near zero
# for any skin tone. Plain constants (not ImageNet's) because the encoder is trained here.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25

#: Named FaceEncoder sizes (``emofuse train --encoder NAME``). The crop side (``size``) is also
#: the preprocessing's ``face.crop_size``: training data and the device follow it.
ENCODER_PRESETS: dict[str, dict] = {
    "tiny": {"frames": 8, "size": 32, "tubelet": (2, 8, 8), "dim": 64, "depth": 4, "heads": 4},
    "small": {"frames": 8, "size": 64, "tubelet": (2, 16, 16), "dim": 192, "depth": 4, "heads": 3,
              "stem": "conv"},
}

#: Token embeddings a FaceEncoder can have (``stem``): ``patch`` cuts each tubelet and projects
#: it linearly (ViViT); ``conv`` runs a small stride-2 convolution stack on every frame first
#: (see :class:`ConvStem`).
STEMS = ("patch", "conv")


def encoder_preset(name: str) -> dict:
    """FaceEncoder keyword arguments of a named preset. Raises ConfigError for an unknown name."""
    try:
        return dict(ENCODER_PRESETS[name])
    except KeyError:
        raise ConfigError(f"unknown encoder size {name!r}; choose one of {', '.join(ENCODER_PRESETS)}") from None


class Attention(nn.Module):
    """Multi-head attention written with matmul + softmax (exports as standard ONNX ops).

    Self-attention when called with one sequence, cross-attention (queries from ``x``, keys
    and values from ``context``) when given two. Shapes: x (B, Nq, D), context (B, Nk, D) ->
    (B, Nq, D). Vaswani et al. 2017, "Attention Is All You Need", NeurIPS.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        # (B, N, D) -> (B, H, N, Dh); -1 keeps the batch dimension dynamic in the ONNX graph.
        return t.reshape(-1, t.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = self._split(self.q(x))
        k, v = self.kv(context).chunk(2, dim=-1)
        k, v = self._split(k), self._split(v)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.proj(out.reshape(-1, x.shape[1], self.heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention block: queries ``x`` attend to ``context``, then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_kv(context))
        return x + self.mlp(self.norm2(x))


class ConvStem(nn.Module):
    """Convolutional tubelet embedding: (B, T, 3, S, S) in normalised pixels -> (B, dim, t, h, w).

    Every frame goes through 3x3 stride-2 convolutions with ReLU (3 -> c -> 2c -> 4c channels,
    each halving the side) until one more halving reaches a tubelet's spatial cell; the last
    layer then reads each 2x2 cell of ``tt`` consecutive frames (a Conv2d over the frames
    stacked in channels) and writes one ``dim``-wide token, so the token grid is exactly the
    patch embedding's. Early convolutions let a ViT see local edges that a single linear
    projection of a 16x16 patch must learn from scratch: Xiao et al. 2021, "Early Convolutions
    Help Transformers See Better", NeurIPS - they matter most when training data are few, as
    with eleven thousand face photos. No normalisation layer: a frozen encoder inside a model
    that is put in train mode must not change (BatchNorm statistics would). Only Conv2d,
    ReLU and reshapes, so INT8 quantisation and ONNX opset 17 take it as it is.
    """

    def __init__(self, dim: int, tubelet: tuple[int, int, int], width: int = 32):
        super().__init__()
        tt, th, tw = tubelet
        if th != tw or th < 4 or th & (th - 1):
            raise ConfigError(f"a conv stem needs square power-of-two tubelets of at least 4 px, got {tubelet}")
        layers, c_in, c = [], 3, int(width)
        for _ in range(int(math.log2(th)) - 1):
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
            c_in, c = c, 2 * c
        self.frames_in = nn.Sequential(*layers)
        self.tt = tt
        self.c_out = c_in
        self.proj = nn.Conv2d(tt * c_in, dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        f = self.frames_in(x.reshape(-1, x.shape[2], x.shape[3], x.shape[4]))  # (B*T, c, h', w')
        h, w = f.shape[2], f.shape[3]
        f = f.reshape(-1, self.tt * self.c_out, h, w)  # tt consecutive frames in channels
        y = self.proj(f)  # (B*T/tt, dim, h, w)
        return y.reshape(b, t // self.tt, y.shape[1], y.shape[2], y.shape[3]).transpose(1, 2)

    def still(self, x: torch.Tensor) -> torch.Tensor:
        """The first temporal slice of a still clip, (B, 3, S, S) -> (B, dim, 1, h, w): the same
        as :meth:`forward` on the frame repeated ``tt`` times, with the per-frame layers run once."""
        f = self.frames_in(x)
        y = self.proj(f.repeat(1, self.tt, 1, 1))
        return y.unsqueeze(2)


class FaceEncoder(nn.Module):
    """Tubelet ViT over a face clip; its pooled feature is the face representation.

    Args:
        frames: clip length in frames (8).
        size: crop side in pixels (32).
        tubelet: (frames, height, width) of one tubelet, (2, 8, 8).
        dim, depth, heads, mlp_ratio: transformer sizes (64, 4, 4, 4).
        stem: ``"patch"`` (a linear tubelet projection, the contract's) or ``"conv"``
            (:class:`ConvStem`).

    Tokens are ordered time-major (t, y, x), so the first ``tokens_per_slice`` tokens are the
    first temporal slice; :meth:`encode_frames` uses only those positions.
    """

    def __init__(
        self,
        frames: int = 8,
        size: int = 32,
        tubelet: tuple[int, int, int] = (2, 8, 8),
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        stem: str = "patch",
    ):
        super().__init__()
        tt, th, tw = (int(v) for v in tubelet)
        if frames % tt or size % th or size % tw:
            raise ConfigError(f"clip {frames}x{size}x{size} is not a whole number of {tubelet} tubelets")
        if stem not in STEMS:
            raise ConfigError(f"unknown encoder stem {stem!r}; choose one of {', '.join(STEMS)}")
        self.config = {
            "frames": int(frames), "size": int(size), "tubelet": [tt, th, tw],
            "dim": int(dim), "depth": int(depth), "heads": int(heads), "mlp_ratio": float(mlp_ratio),
        }
        if stem != "patch":  # configs of patch encoders stay as they were (old checkpoints compare equal)
            self.config["stem"] = stem
        self.stem = stem
        self.frames, self.size, self.tubelet, self.dim = frames, size, (tt, th, tw), dim
        self.grid = (frames // tt, size // th, size // tw)
        self.tokens_per_slice = self.grid[1] * self.grid[2]
        self.n_tokens = self.grid[0] * self.tokens_per_slice
        if stem == "conv":
            self.patch_embed: nn.Module = ConvStem(dim, (tt, th, tw))
        else:
            self.patch_embed = nn.Conv3d(3, dim, kernel_size=(tt, th, tw), stride=(tt, th, tw))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokens(self, clip: torch.Tensor) -> torch.Tensor:
        """Embedded tubelet tokens with positions, before any block.

        Args:
            clip: float32 (B, T, 3, H, W) RGB in [0, 1] (the contract's ``face_clip`` layout).
        Returns:
            float32 (B, T/tt * H/th * W/tw, dim).
        """
        if not torch.jit.is_tracing() and tuple(clip.shape[-3:]) != (3, self.size, self.size):
            raise BadInputError(f"face crops must be (..., 3, {self.size}, {self.size}) for this encoder, "
                                f"got {tuple(clip.shape)}")
        x = (clip - PIXEL_MEAN) / PIXEL_STD
        x = self.patch_embed(x) if self.stem == "conv" else self.patch_embed(x.transpose(1, 2))  # (B, D, t, h, w)
        n = x.shape[2] * x.shape[3] * x.shape[4]
        x = x.reshape(-1, self.dim, n).transpose(1, 2)
        return x + self.pos_embed[:, :n]

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the blocks and the final norm on (B, N, dim) tokens."""
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)

    def forward(self, face_clip: torch.Tensor) -> torch.Tensor:
        """Pooled clip feature.

        Args:
            face_clip: float32 (B, 8, 3, 32, 32) RGB in [0, 1].
        Returns:
            float32 (B, dim): mean of the normalised output tokens (VideoMAE's pooling).
        """
        return self.forward_tokens(self.tokens(face_clip)).mean(dim=1)

    def encode_frames(self, crops: torch.Tensor) -> torch.Tensor:
        """Pooled feature of single frames (the per-frame features MVP consumes).

        Each crop is repeated to one tubelet depth (2 frames) and embedded at the first
        temporal slice's positions, so a still frame looks like the start of a still clip.

        Args:
            crops: float32 (B, 3, 32, 32) RGB in [0, 1].
        Returns:
            float32 (B, dim).
        """
        if self.stem == "conv" and not torch.jit.is_tracing():
            if tuple(crops.shape[-3:]) != (3, self.size, self.size):
                raise BadInputError(f"face crops must be (..., 3, {self.size}, {self.size}) for this encoder, "
                                    f"got {tuple(crops.shape)}")
            x = self.patch_embed.still((crops - PIXEL_MEAN) / PIXEL_STD)
            x = x.reshape(-1, self.dim, self.tokens_per_slice).transpose(1, 2) + self.pos_embed[:, :self.tokens_per_slice]
            return self.forward_tokens(x).mean(dim=1)
        clip = crops.unsqueeze(1).expand(-1, self.tubelet[0], -1, -1, -1)
        return self.forward_tokens(self.tokens(clip)).mean(dim=1)

    def freeze(self) -> "FaceEncoder":
        """Stop gradients to every parameter (the encoder stays as pretrained); returns self."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class FrameEncoderExport(nn.Module):
    """ONNX face_encoder.onnx wrapper: ``face_crop`` (B, 3, S, S) -> ``face_feat`` (B, dim)
    (S = the encoder's crop side: 32 for ``tiny``, 64 for ``small``)."""

    input_names = ("face_crop",)
    output_names = ("face_feat",)

    def __init__(self, encoder: FaceEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, face_crop: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_frames(face_crop)


class MaskedAutoencoder(nn.Module):
    """VideoMAE-style masked autoencoder around a :class:`FaceEncoder`.

    Tube masking: the same spatial positions are hidden in every temporal slice (so a
    tubelet cannot be copied from its neighbour in time), at ``mask_ratio`` (0.75). The
    encoder sees only visible tokens; a light decoder gets them plus a shared mask token at
    every hidden position and predicts the hidden tubelets' pixels, each normalised by its
    own mean and standard deviation (VideoMAE's target).
    """

    def __init__(self, encoder: FaceEncoder, decoder_dim: int = 32, decoder_depth: int = 1,
                 decoder_heads: int = 2, mask_ratio: float = 0.75):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        tt, th, tw = encoder.tubelet
        self.patch_dim = 3 * tt * th * tw
        self.enc_to_dec = nn.Linear(encoder.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.dec_pos = nn.Parameter(torch.zeros(1, encoder.n_tokens, decoder_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.dec_pos, std=0.02)
        self.decoder = nn.ModuleList(Block(decoder_dim, decoder_heads, 2.0) for _ in range(decoder_depth))
        self.dec_norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, self.patch_dim)

    def patchify(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, N, 3*tt*th*tw) tubelet pixels in token order."""
        b = clip.shape[0]
        tt, th, tw = self.encoder.tubelet
        gt, gh, gw = self.encoder.grid
        x = clip.reshape(b, gt, tt, 3, gh, th, gw, tw)
        x = x.permute(0, 1, 4, 6, 2, 3, 5, 7)  # (b, gt, gh, gw, tt, c, th, tw)
        return x.reshape(b, gt * gh * gw, self.patch_dim)

    def tube_mask(self, batch: int, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
        """Boolean (B, N) mask, True = hidden; the same spatial cells hidden in every slice."""
        gt = self.encoder.grid[0]
        s = self.encoder.tokens_per_slice
        n_hide = int(round(self.mask_ratio * s))
        noise = torch.rand(batch, s, generator=generator, device=device)
        order = noise.argsort(dim=1)
        hidden = torch.zeros(batch, s, dtype=torch.bool, device=device)
        hidden.scatter_(1, order[:, :n_hide], True)
        return hidden.repeat(1, gt)

    def forward(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction loss (scalar): MSE on hidden tubelets' per-patch-normalised pixels.

        Args:
            clip: float32 (B, 8, 3, 32, 32) in [0, 1].
        """
        b = clip.shape[0]
        hidden = self.tube_mask(b, generator, clip.device)
        tokens = self.encoder.tokens(clip)
        n_vis = int((~hidden[0]).sum())
        visible = tokens[~hidden].reshape(b, n_vis, -1)
        latent = self.encoder.forward_tokens(visible)
        dec_in = self.mask_token.expand(b, hidden.shape[1], -1).clone()
        dec_in[~hidden] = self.enc_to_dec(latent).reshape(b * n_vis, -1)
        x = dec_in + self.dec_pos
        for blk in self.decoder:
            x = blk(x)
        pred = self.head(self.dec_norm(x))[hidden]
        target = self.patchify(clip)[hidden]
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return ((pred - target) ** 2).mean()
