"""The weight spectra: every weight matrix's singular values and every rank measure, its norms, and the rank
of the loss gradient on one full batch, after every epoch; at the iteration's end the ranks of the last
epoch become the iteration's columns and the singular values a row each of spectra.jsonl."""

from __future__ import annotations

import torch

from rankprune.measure import measure_layers, measure_matrices, recorded_measures
from rankprune.probes.base import ProbeContext, register
from rankprune.probes.beside import Later
from rankprune.runfolder import SPECTRA
from rankprune.seeds import GRAD, derive_seed
from rankprune.train import batch_gradient

__all__ = ["SpectraProbe"]


@register("spectra")
class SpectraProbe:
    def __init__(self):
        self._last = None  # the last epoch's LayerSpectra
        self._batch = None

    def _gradient_batch(self, ctx: ProbeContext) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded, full-size batch of training rows on which every epoch's gradient rank is measured.

        A gradient of B rows has rank at most B; the epoch's last batch is often short (14 rows on digits),
        which would cap the measured rank at its size rather than at the batch size the run trains with.
        """
        if self._batch is None:
            train = ctx.data.train
            g = torch.Generator().manual_seed(derive_seed(ctx.cfg.seed, ctx.depth, ctx.iteration, GRAD))
            idx = torch.randperm(len(train), generator=g)[: min(len(train), ctx.cfg.train.batch_size)].to(train.x.device)
            self._batch = (torch.index_select(train.x, 0, idx), torch.index_select(train.y, 0, idx))
        return self._batch

    @staticmethod
    def defers(ctx: ProbeContext) -> bool:
        """Whether the epoch's decompositions run beside the next epoch's training (probes/beside.py). Where they give
        the driving rank, --saturate both reads it only once accuracy is flat (the plateau rule waits for it then);
        --saturate rank reads it at every epoch's end, so there nothing would train beside them."""
        return not (ctx.cfg.rank.source == "weights" and ctx.train.saturate == "rank")

    def epoch(self, ctx: ProbeContext) -> dict | Later:
        x, y = self._gradient_batch(ctx)
        batch_gradient(ctx.model, x, y, ctx.precision, ctx.cfg.train.loss)  # read by measure_layers' grad_rank
        measures = recorded_measures(ctx.cfg.rank.measure)
        singular = ctx.precomputed.pop("singular_values", None)
        if not self.defers(ctx):
            self._last = measure_layers(ctx.model, measures, grad_rows=len(x), singular=singular)
            return self._last.row()
        weights = list(ctx.model.weights())
        # copies: the next epoch moves the weights and overwrites the gradients while these are measured
        grads = [None if w.grad is None else w.grad.detach().clone() for w in weights]
        weights = [w.detach().clone() for w in weights]

        def measure() -> dict:
            self._last = measure_matrices(weights, grads, measures, grad_rows=len(x), singular=singular)
            return self._last.row()

        return Later(measure)

    def iteration(self, ctx: ProbeContext) -> dict:
        for layer, s in enumerate(self._last.singular_values):
            ctx.run.append(SPECTRA, {"depth": ctx.depth, "iteration": ctx.iteration, "layer": layer, "singular_values": s.tolist()})
        return {f"rank_{spec}": values for spec, values in self._last.ranks.items()}
