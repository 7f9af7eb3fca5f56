"""Sweep cases: transformers (ViT, GPT-2, BERT, MLP-Mixer, nn.TransformerEncoderLayer), recurrent classifiers
and an embedding-bag recommender."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from tools.sweep_cases import BATCH, case, images, several, tokens

DIM, HEADS, VOCAB, LENGTH = 32, 4, 100, 16


class SelfAttention(nn.Module):
    """Fused qkv projection, heads split by view/transpose, scaled scores, optional mask, softmax, merge."""

    def __init__(self, dim: int = DIM, heads: int = HEADS, causal: str = ""):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.causal = causal  # "": no mask, "sliced": HF GPT-2's bias[:, :, :length, :length], "full": the whole buffer
        if causal:
            self.register_buffer("bias", torch.tril(torch.ones(LENGTH, LENGTH, dtype=torch.bool)).view(1, 1, LENGTH, LENGTH))

    def forward(self, x, attention_mask=None):
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=2)
        q, k, v = (t.view(batch, length, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        if self.causal:
            mask = self.bias[:, :, :length, :length] if self.causal == "sliced" else self.bias
            scores = scores.masked_fill(~mask, float("-inf"))
        if attention_mask is not None:
            scores = scores + attention_mask
        out = torch.matmul(F.softmax(scores, dim=-1), v)
        return self.proj(out.transpose(1, 2).contiguous().view(batch, length, dim))


class PreNormBlock(nn.Module):
    """ViT / GPT-2 block: x + attn(ln(x)), x + mlp(ln(x))."""

    def __init__(self, causal: str, tanh_gelu: bool):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(DIM), SelfAttention(causal=causal), nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU("tanh" if tanh_gelu else "none"), nn.Linear(4 * DIM, DIM),
                                 nn.Dropout(0.1))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


@case("vit", "ViT", images(3, 16, 16), "patch conv, cls token cat, pos embed, pre-norm attention, scalar scale")
class VisionTransformer(nn.Module):
    def __init__(self, patch: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, DIM, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, DIM) * 0.02)
        self.blocks = nn.Sequential(PreNormBlock("", False), PreNormBlock("", False))
        self.norm, self.head = nn.LayerNorm(DIM), nn.Linear(DIM, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class GPT2(nn.Module):
    def __init__(self, causal: str):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, DIM), nn.Embedding(LENGTH, DIM)
        self.h = nn.ModuleList(PreNormBlock(causal, True) for _ in range(2))
        self.ln_f = nn.LayerNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, input_ids):
        positions = torch.arange(0, input_ids.size(-1), dtype=torch.long, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


case("gpt2", "GPT-2", tokens(VOCAB, LENGTH), "causal mask buffer + masked_fill, tanh GELU, scalar scale")(
    lambda: GPT2("full"))
case("gpt2_sliced_mask", "GPT-2", tokens(VOCAB, LENGTH), "HF's bias[:, :, :length, :length] with a traced length")(
    lambda: GPT2("sliced"))


class BertLayer(nn.Module):
    """Post-norm: separate q/k/v, additive extended mask, dropout, residual + LayerNorm twice, GELU."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(DIM, DIM) for _ in range(3))
        self.dense, self.norm1 = nn.Linear(DIM, DIM), nn.LayerNorm(DIM, eps=1e-12)
        self.intermediate, self.output = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)
        self.norm2, self.dropout = nn.LayerNorm(DIM, eps=1e-12), nn.Dropout(0.1)

    def split_heads(self, x):
        return x.view(x.size(0), x.size(1), HEADS, DIM // HEADS).permute(0, 2, 1, 3)

    def forward(self, hidden, extended_mask):
        q, k, v = self.split_heads(self.query(hidden)), self.split_heads(self.key(hidden)), self.split_heads(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(DIM // HEADS) + extended_mask
        context = torch.matmul(self.dropout(nn.functional.softmax(scores, dim=-1)), v).permute(0, 2, 1, 3).contiguous()
        attention = self.norm1(self.dropout(self.dense(context.view(hidden.shape))) + hidden)
        return self.norm2(self.dropout(self.output(F.gelu(self.intermediate(attention)))) + attention)


def padding_mask(generator: torch.Generator) -> tuple:
    """BERT's attention_mask: ones, then zeros over a random-length padded tail per sequence."""
    lengths = torch.randint(LENGTH // 2, LENGTH + 1, (BATCH, 1), generator=generator)
    return ((torch.arange(LENGTH).unsqueeze(0) < lengths).long(),)


@case("bert", "BERT", several(tokens(VOCAB, LENGTH), padding_mask),
      "attention mask input, (1 - mask) * -10000, post-norm, pooler tanh, tuple output")
class Bert(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings, self.position_embeddings = nn.Embedding(VOCAB, DIM), nn.Embedding(LENGTH, DIM)
        self.embedding_norm = nn.LayerNorm(DIM, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer() for _ in range(2))
        self.pooler = nn.Linear(DIM, DIM)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        hidden = self.embedding_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        extended = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * -10000.0
        for layer in self.layers:
            hidden = layer(hidden, extended)
        return hidden, torch.tanh(self.pooler(hidden[:, 0]))


@case("mlp_mixer", "MLP-Mixer", images(3, 16, 16), "token mixing through transpose, GELU MLPs, LayerNorm")
class MLPMixer(nn.Module):
    def __init__(self, patches: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, DIM, 4, 4)
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.token_mlp = nn.Sequential(nn.Linear(patches, 32), nn.GELU(), nn.Linear(32, patches))
        self.channel_mlp = nn.Sequential(nn.Linear(DIM, 64), nn.GELU(), nn.Linear(64, DIM))
        self.head = nn.Linear(DIM, 10)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.channel_mlp(self.norm2(x))
        return self.head(x.mean(dim=1))


@case("transformer_encoder", "nn.Transformer", images(LENGTH, DIM), "nn.TransformerEncoderLayer (batch_first)")
class TransformerEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(DIM, HEADS, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(DIM, 4)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


class RecurrentClassifier(nn.Module):
    def __init__(self, cell: type):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, DIM)
        self.rnn = cell(DIM, DIM, batch_first=True)
        self.fc = nn.Linear(DIM, 5)

    def forward(self, input_ids):
        output, _ = self.rnn(self.embedding(input_ids))
        return self.fc(output[:, -1, :])


case("lstm_classifier", "LSTM", tokens(VOCAB, LENGTH), "Embedding, LSTM, last step, Linear")(lambda: RecurrentClassifier(nn.LSTM))
case("gru_classifier", "GRU", tokens(VOCAB, LENGTH), "Embedding, GRU, last step, Linear")(lambda: RecurrentClassifier(nn.GRU))


@case("dlrm", "Recommender", several(images(8), tokens(50, 3)), "EmbeddingBag sum, bottom/top MLP, pairwise dot")
class DLRM(nn.Module):
    def __init__(self):
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
        self.tables = nn.ModuleList(nn.EmbeddingBag(50, 8, mode="sum") for _ in range(2))
        self.top = nn.Sequential(nn.Linear(8 + 6, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, dense, sparse):
        x = self.bottom(dense)
        features = torch.stack([x] + [table(sparse) for table in self.tables], dim=1)
        interactions = torch.bmm(features, features.transpose(1, 2))
        rows, cols = torch.triu_indices(3, 3, offset=1)
        return torch.sigmoid(self.top(torch.cat([x, interactions[:, rows, cols], interactions[:, cols, rows]], 1)))
