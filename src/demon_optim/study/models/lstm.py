"""Word-level LSTM language models of Zaremba, Sutskever & Vinyals (2014).

Embedding -> dropout -> a stacked LSTM (dropout between layers) -> dropout -> linear
softmax over the vocabulary; dropout only on non-recurrent connections. Sizes (10k
vocabulary, untied input and output embeddings):

- "medium": 2 x 650, dropout 0.5, weights uniform in [-0.05, 0.05]: 19,780,400 parameters
  (embedding 6.5M, LSTM 6.77M, softmax 6.51M); the paper's ~20M;
- "small": 2 x 200, no dropout, uniform in [-0.1, 0.1]: 4,653,200 parameters.

torch's LSTM has two bias vectors per layer (Zaremba's has one), 2 x 4 x hidden extra
parameters per layer: 5,200 in all for "medium", 1,600 for "small".
"""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [layers, B, hidden]

# name -> (hidden size, dropout, init scale, bptt) as in Zaremba et al.
ZAREMBA = {
    "small": (200, 0.0, 0.1, 20),
    "medium": (650, 0.5, 0.05, 35),
    "large": (1500, 0.65, 0.04, 35),
}


class LSTMLanguageModel(nn.Module):
    """``forward(tokens [T, B], state) -> (logits [T, B, vocab], new state)``."""

    def __init__(
        self,
        vocab_size: int = 10_000,
        hidden: int = 650,
        layers: int = 2,
        dropout: float = 0.5,
        init_scale: float = 0.05,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab_size)
        self.hidden, self.layers = hidden, layers
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -init_scale, init_scale)

    @classmethod
    def zaremba(cls, size: str, vocab_size: int = 10_000) -> LSTMLanguageModel:
        """The "small", "medium" or "large" model of the paper."""
        hidden, dropout, init_scale, _ = ZAREMBA[size]
        return cls(vocab_size, hidden, 2, dropout, init_scale)

    def init_state(self, batch_size: int) -> State:
        """Zero state for ``batch_size`` columns."""
        weight = self.decoder.weight
        zeros = weight.new_zeros(self.layers, batch_size, self.hidden)
        return zeros, zeros.clone()

    def forward(
        self, tokens: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Logits for the next token at every position, and the state after the last one."""
        if state is None:
            state = self.init_state(tokens.shape[1])
        embedded = self.drop(self.embedding(tokens))
        output, state = self.lstm(embedded, state)
        return self.decoder(self.drop(output)), state


def detach_state(state: State) -> State:
    """The same state cut from the graph: truncated BPTT stops gradients at window edges."""
    return state[0].detach(), state[1].detach()
