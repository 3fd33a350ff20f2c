"""The in-context transformer (models/transformer.py) and the sequences it reads (tasks.draw_sequences): the causal
mask, the tokens, a sequence holds one task, and a one-block transformer learns a task that is trivial in context."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rankprune.models.transformer import Transformer, tokens
from rankprune.tasks import TaskStream, draw_sequences


def test_the_tokens_carry_the_previous_label_and_never_the_own_one():
    x = torch.randn(2, 4, 3)
    y = torch.tensor([[1, 0, 2, 2], [0, 0, 1, 2]])
    t = tokens(x, y, n_classes=3)
    assert t.shape == (2, 4, 6) and torch.equal(t[..., :3], x)
    assert torch.equal(t[:, 0, 3:], torch.zeros(2, 3))
    assert torch.equal(t[0, 1:, 3:], F.one_hot(y[0, :-1], 3).float())


def test_no_position_sees_a_later_example_or_label():
    torch.manual_seed(0)
    model = Transformer(d_in=5, n_classes=3, width=16, blocks=2).eval()
    x, y = torch.randn(1, 10, 5), torch.randint(0, 3, (1, 10))
    before = model(tokens(x, y, 3))
    later_x, later_y = x.clone(), y.clone()
    later_x[:, 6:] = torch.randn(1, 4, 5)
    later_y[:, 5:] = (y[:, 5:] + 1) % 3  # label 5 enters the tokens at position 6
    after = model(tokens(later_x, later_y, 3))
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-6)  # positions 0..5 saw nothing that changed
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_the_sizes_that_shrink_are_separate():
    model = Transformer(d_in=8, n_classes=10, width=32, blocks=4, ff=50, qk=7, vo=9, positions=100)
    block = model.blocks[0]
    assert (block.q.out_features, block.v.out_features, block.up.out_features) == (7, 9, 50)
    assert len(model.blocks) == 4 and model.position.shape == (100, 32)
    assert model(torch.randn(3, 100, 18)).shape == (3, 100, 10)


def test_a_sequence_holds_one_task_and_reproduces_from_its_seed():
    stream = TaskStream(seed=2, d=16, n_classes=4)
    x, y = torch.randn(50, 1, 4, 4), torch.randint(0, 4, (50,))
    sx, sy = draw_sequences(x, y, torch.tensor([3, 9]), 12, stream, seed=1)
    assert sx.shape == (2, 12, 16) and sy.shape == (2, 12)
    again = draw_sequences(x, y, torch.tensor([3, 9]), 12, stream, seed=1)
    assert torch.equal(sx, again[0]) and torch.equal(sy, again[1])
    # every example of sequence 0 is some image under task 3, and its label that image's, permuted by task 3
    projected = x.flatten(1) @ stream.projection(3).T
    distance, row = torch.cdist(sx[0], projected).min(dim=1)
    assert float(distance.max()) < 1e-2  # cdist in float32 rounds a zero distance up to about 2e-3
    assert torch.equal(sy[0], stream.permutation(3)[y[row]])
    assert float(torch.cdist(sx[1], projected).min(dim=1).values.min()) > 0.1  # sequence 1 is another task


def test_a_one_block_transformer_learns_a_label_that_the_context_gives():
    """Each sequence has one label for all its examples, drawn afresh per sequence: from position 1 on the context
    says it, at position 0 nothing can. Inputs are noise, so only the context helps."""
    torch.manual_seed(0)
    classes, length = 4, 8
    model = Transformer(d_in=6, n_classes=classes, width=16, blocks=1, positions=length)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batch(n):
        label = torch.randint(0, classes, (n, 1)).expand(n, length)
        return tokens(torch.randn(n, length, 6), label, classes), label

    for _ in range(300):
        t, label = batch(64)
        loss = F.cross_entropy(model(t).reshape(-1, classes), label.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    t, label = batch(2000)
    with torch.no_grad():
        right = (model(t).argmax(-1) == label).float().mean(0)
    assert right[1:].min() > 0.95  # told by the context
    assert right[0] < 0.4  # position 0 has no context: chance is 0.25
