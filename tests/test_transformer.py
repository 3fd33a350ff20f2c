"""The in-context transformer (models/transformer.py) and the sequences it reads (tasks.draw_sequences): the causal
mask, the tokens, a sequence holds one task, a one-block transformer learns a task that is trivial in context, and
its own folds (the query-key form's SVD, SliceGPT's rotation of the residual stream) below full width. The contract
every family meets (full-width warm rebuild, counts, keep_units) is tests/test_families.py."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rankprune.models import get_family
from rankprune.models.transformer import Transformer, tokens
from rankprune.rebuild import rebuild
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
    model = Transformer((10, 8), [16] + [16, 16, 64] * 2, 3).eval()
    x, y = torch.randn(1, 10, 5), torch.randint(0, 3, (1, 10))
    before = model(tokens(x, y, 3))
    later_x, later_y = x.clone(), y.clone()
    later_x[:, 6:] = torch.randn(1, 4, 5)
    later_y[:, 5:] = (y[:, 5:] + 1) % 3  # label 5 enters the tokens at position 6
    after = model(tokens(later_x, later_y, 3))
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-6)  # positions 0..5 saw nothing that changed
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_the_sizes_that_shrink_are_separate():
    model = Transformer((100, 18), [32] + [7, 9, 50] * 4, 10)
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
    model = Transformer((length, 6 + classes), [16, 16, 16, 64], classes)
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


def _model(widths, seed=0):
    return get_family("transformer").build((9, 7), widths, 5, seed=seed).double()


def test_the_query_key_fold_keeps_the_scores_at_the_forms_rank():
    """A head whose query-key form has rank 2 (queries and keys through 2 directions, biases in them) folds to
    qk = 2 with no change in output: the 1/sqrt(qk) of the narrower head is made up in the queries."""
    model = _model([6, 5, 4, 12])
    block = model.blocks[0]
    with torch.no_grad():
        mix = torch.randn(5, 2, dtype=torch.float64)
        block.q.weight.copy_(mix @ torch.randn(2, 6, dtype=torch.float64))
        block.q.bias.copy_(mix @ torch.randn(2, dtype=torch.float64))
    x = torch.randn(40, 9, 7, dtype=torch.float64)
    new = rebuild(model, [6, 2, 4, 12], "warm", seed=0, inputs=x)
    assert new.blocks[0].q.out_features == 2 and new.blocks[0].k.out_features == 2
    torch.testing.assert_close(new(x), model(x), atol=1e-9, rtol=0)
    cut = rebuild(model, [6, 1, 4, 12], "warm", seed=0, inputs=x)
    assert float((cut(x) - model(x)).abs().max().detach()) > 1e-4  # below the form's rank something is lost


def test_the_residual_rotation_cuts_a_stream_to_the_directions_it_spans():
    """Every writer (embedding, positions, attention output, feed-forward output) writes into the same 2 mean-free
    directions of a 6-wide stream: the rotation keeps exactly those, in a stream of width 3 (LayerNorm's centring
    takes one), and the function is unchanged. Gains and biases of the norms are not the identity, so moving them
    into the readers is tested too."""
    model = _model([6, 4, 4, 10, 4, 4, 10])
    basis = torch.linalg.qr(torch.randn(6, 2, dtype=torch.float64) - 0.0)[0]
    basis = basis - basis.mean(0)  # mean-free directions
    with torch.no_grad():
        project = basis @ torch.linalg.pinv(basis)
        for w, b in model._writers():
            w.copy_(project @ w)
            if b is not None:
                b.copy_(project @ b)
        for norm in (model.ln, *[n for blk in model.blocks for n in (blk.ln1, blk.ln2)]):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
    x = torch.randn(60, 9, 7, dtype=torch.float64)
    ranks = torch.linalg.matrix_rank(model.hidden(x)[0])
    assert int(ranks) == 2
    new = rebuild(model, [3, 4, 4, 10, 4, 4, 10], "warm", seed=0, inputs=x)
    assert new.embed.out_features == 3 and new.position.shape == (9, 3) and new.read_out.in_features == 3
    held_out = torch.randn(30, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(new(held_out), model(held_out), atol=1e-8, rtol=0)


def test_the_weights_and_activations_the_groups_are_measured_on():
    model = _model([6, 5, 4, 12])
    x = torch.randn(20, 9, 7, dtype=torch.float64)
    residual, form, values, units = model.hidden(x)
    torch.testing.assert_close(residual.mean(dim=1), torch.zeros(len(residual), dtype=torch.float64))  # centred
    assert residual.shape == (20 * 9 * 3, 6)  # the stream where each of the three LayerNorms reads it
    # the query-key factor has the singular values of the whole score matrix Q K^T on the data
    h = model.blocks[0].ln1(model._stream(x))
    q, k = model.blocks[0].q(h).reshape(-1, 5), model.blocks[0].k(h).reshape(-1, 5)
    torch.testing.assert_close(torch.linalg.svdvals(form), torch.linalg.svdvals(q @ k.T)[:5])
    assert values.shape == (180, 4) and units.shape == (180, 12)
    weights = model.weights()
    assert weights[1].shape == (7, 7) and int(torch.linalg.matrix_rank(weights[1])) == 5  # the form: rank <= qk
    assert weights[2] is model.blocks[0].v.weight and weights[3] is model.blocks[0].up.weight


def test_the_hessian_of_a_transformer_is_a_symmetric_operator():
    """H v needs double backward, which the fused CPU attention kernel lacks: the probe runs attention through the
    math kernel. u^T H v = v^T H u on random directions shows the products are a Hessian's."""
    import numpy as np

    from rankprune.probes.hessian import hessian_operator

    model = _model([6, 5, 4, 12])
    x, y = torch.randn(10, 9, 7, dtype=torch.float64), torch.randint(0, 5, (10, 9))
    op, n = hessian_operator(model, x, y, "cross-entropy")
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(n), rng.standard_normal(n)
    assert n == sum(p.numel() for p in model.parameters())
    assert abs(u @ op.matvec(v) - v @ op.matvec(u)) < 1e-8 * max(1.0, abs(u @ op.matvec(v)))
