"""Findings: a suite of grid studies, each replicated over seeds, whose hypotheses the report states verdicts on.

    suite.py       the suite file: its questions, its experiments (a study file, seeds, cost, hypotheses)
    hypotheses.py  a registry of kinds (trend, paired, association): trials table -> verdicts, summary, figure
    law.py         a law of the convergent width on the task knobs, fitted on some studies and tested on settings
                   it did not see (question 7): a suite's [[law]]
    baseline.py    another controller (the original notebook's loop) on a study's (depth, seed) pairs under a FLOPs
                   budget from its runs, resumably, one result file per pair: a suite's [[baseline]]
    frame.py       the trials table hypotheses read: parameters by name, widths summed, censored per layer
    progress.py    what of an experiment's grid is done, failed, running or missing
    runner.py      tops every study up to its grid, resumably (`rankprune findings run`)
    figures.py     the report's figures: each seed beside the mean and its interval, censored runs marked

The report itself is rankprune.report.findings (`rankprune findings report`).
"""

from rankprune.findings.hypotheses import KINDS, Hypothesis, Outcome, Tested, evaluate, register
from rankprune.findings.suite import DEFAULT_SUITE, Experiment, Suite, parse_suite, with_overrides

__all__ = ["Suite", "Experiment", "Hypothesis", "Outcome", "Tested", "KINDS", "register", "evaluate", "parse_suite",
           "with_overrides", "DEFAULT_SUITE"]
