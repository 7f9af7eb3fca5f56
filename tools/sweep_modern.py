"""Sweep cases: newer idioms (LLaMA's RMSNorm and SwiGLU, scaled_dot_product_attention, einsum, Swin windows,
CLIP towers, Conformer's GLU conv, wav2vec's feature encoder, TCN's causal dilations, style transfer)."""
import torch
import torch.nn.functional as F
from torch import nn

from tools.sweep_cases import case, images, several, tokens

DIM, HEADS, VOCAB, LENGTH = 32, 4, 100, 16


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaBlock(nn.Module):
    """RMSNorm, q/k/v without bias, scaled_dot_product_attention (causal), SwiGLU MLP."""

    def __init__(self):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(DIM), RMSNorm(DIM)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(DIM, DIM, bias=False) for _ in range(4))
        self.gate_proj, self.up_proj = nn.Linear(DIM, 64, bias=False), nn.Linear(DIM, 64, bias=False)
        self.down_proj = nn.Linear(64, DIM, bias=False)

    def heads(self, x):
        return x.view(x.shape[0], x.shape[1], HEADS, DIM // HEADS).transpose(1, 2)

    def forward(self, x):
        h = self.input_layernorm(x)
        attention = F.scaled_dot_product_attention(self.heads(self.q_proj(h)), self.heads(self.k_proj(h)),
                                                   self.heads(self.v_proj(h)), is_causal=True)
        x = x + self.o_proj(attention.transpose(1, 2).reshape(x.shape))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


@case("llama", "LLaMA", tokens(VOCAB, LENGTH), "RMSNorm, SDPA (causal), SwiGLU, untied head")
class Llama(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(LlamaBlock() for _ in range(2))
        self.norm, self.lm_head = RMSNorm(DIM), nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, input_ids):
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


@case("einsum_attention", "attention", images(LENGTH, DIM), "einsum scores and context, softmax method spelling")
class EinsumAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_qkv, self.to_out = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x):
        batch, length, _ = x.shape
        q, k, v = self.to_qkv(x).reshape(batch, length, 3, HEADS, DIM // HEADS).unbind(2)
        attention = (torch.einsum("bihd,bjhd->bhij", q, k) * (DIM // HEADS) ** -0.5).softmax(dim=-1)
        return self.to_out(torch.einsum("bhij,bjhd->bihd", attention, v).reshape(batch, length, DIM))


@case("swin_window", "Swin", images(3, 16, 16), "window partition / reverse with view, permute, contiguous")
class SwinWindows(nn.Module):
    def __init__(self, window: int = 2):
        super().__init__()
        self.window = window
        self.patch_embed, self.norm = nn.Conv2d(3, DIM, 4, 4), nn.LayerNorm(DIM)
        self.mixer, self.head = nn.Linear(DIM, DIM), nn.Linear(DIM, 10)

    def forward(self, x):
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # B, H, W, C
        batch, height, width, channels = x.shape
        w = self.window
        windows = x.view(batch, height // w, w, width // w, w, channels).permute(0, 1, 3, 2, 4, 5)
        windows = self.mixer(self.norm(windows.contiguous().view(-1, w * w, channels)))
        x = windows.view(batch, height // w, width // w, w, w, channels).permute(0, 1, 3, 2, 4, 5)
        return self.head(x.reshape(batch, -1, channels).mean(1))


@case("clip_towers", "CLIP", several(images(3, 16, 16), tokens(VOCAB, 8)),
      "two towers, F.normalize, logit_scale.exp() * image @ text.t()")
class CLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                    nn.Linear(16, DIM))
        self.token_embedding, self.text_projection = nn.Embedding(VOCAB, DIM), nn.Linear(DIM, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, image, text):
        image_features = F.normalize(self.visual(image), dim=-1)
        text_features = F.normalize(self.text_projection(self.token_embedding(text).mean(1)), dim=-1)
        return self.logit_scale.exp() * image_features @ text_features.t()


@case("conformer_conv", "Conformer", images(LENGTH, DIM), "pointwise conv, GLU, depthwise Conv1d, BN, SiLU")
class ConformerConvModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer_norm = nn.LayerNorm(DIM)
        self.pointwise1, self.glu = nn.Conv1d(DIM, 2 * DIM, 1), nn.GLU(dim=1)
        self.depthwise, self.norm = nn.Conv1d(DIM, DIM, 7, padding=3, groups=DIM), nn.BatchNorm1d(DIM)
        self.activation, self.pointwise2 = nn.SiLU(), nn.Conv1d(DIM, DIM, 1)

    def forward(self, x):
        y = self.glu(self.pointwise1(self.layer_norm(x).transpose(1, 2)))
        y = self.pointwise2(self.activation(self.norm(self.depthwise(y))))
        return x + y.transpose(1, 2)


@case("wav2vec_features", "wav2vec", images(400), "Conv1d + GroupNorm + GELU, unsqueeze, transpose, LayerNorm")
class FeatureEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0, self.norm0 = nn.Conv1d(1, 16, 10, 5, bias=False), nn.GroupNorm(16, 16)
        self.conv1 = nn.Conv1d(16, 16, 3, 2, bias=False)
        self.layer_norm, self.projection = nn.LayerNorm(16), nn.Linear(16, DIM)

    def forward(self, waveform):
        x = F.gelu(self.norm0(self.conv0(waveform.unsqueeze(1))))
        x = F.gelu(self.conv1(x)).transpose(1, 2)
        return self.projection(self.layer_norm(x))


@case("tcn", "TCN", images(4, 64), "dilated causal Conv1d: F.pad left, chomp slice, residual 1x1")
class TemporalConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(4 if i == 0 else 16, 16, 3, dilation=2 ** i) for i in range(3))
        self.downsample, self.fc = nn.Conv1d(4, 16, 1), nn.Linear(16, 3)

    def forward(self, x):
        y = x
        for i, conv in enumerate(self.convs):
            y = F.relu(conv(F.pad(y, (2 * 2 ** i, 0))))
        y = F.relu(y + self.downsample(x))
        return self.fc(y[:, :, -1])


@case("style_transfer", "style transfer", images(3, 16, 16), "reflection pad, InstanceNorm, nn.Upsample, clamp")
class StyleTransfer(nn.Module):
    def __init__(self):
        super().__init__()
        self.pad1, self.conv1 = nn.ReflectionPad2d(4), nn.Conv2d(3, 8, 9)
        self.down = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(8, 16, 3, 2), nn.ReLU())
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(16, 8, 3))
        self.norm, self.out = nn.InstanceNorm2d(8, affine=True), nn.Conv2d(8, 3, 1)

    def forward(self, x):
        y = self.up(self.down(F.relu(self.conv1(self.pad1(x)))))
        return self.out(F.relu(self.norm(y))).clamp(0, 255)


@case("mobilenet_v1", "MobileNetV1", images(3, 16, 16), "depthwise-separable, F.hardtanh(0, 6), Dropout2d")
class MobileNetV1(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16)
        self.dw, self.dw_bn = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16)
        self.pw, self.pw_bn = nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32)
        self.dropout, self.fc = nn.Dropout2d(0.2), nn.Linear(32, 10)

    def forward(self, x):
        x = F.hardtanh(self.bn(self.stem(x)), 0.0, 6.0)
        x = F.hardtanh(self.dw_bn(self.dw(x)), 0.0, 6.0)
        x = self.dropout(F.hardtanh(self.pw_bn(self.pw(x)), 0.0, 6.0))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
