"""The training-dynamics experiments as their papers ran them, step by step rather than epoch by epoch:

- jamming.py: the jamming transition (Geiger, Spigler et al. 2019): parameter-matched fully connected networks
  on a binary task with one output, the quadratic hinge loss, N_Delta against the parameter count N;
- lazy.py: lazy training (Chizat, Oyallon and Bach 2019): output scaling alpha, width, random features and a
  bad initialisation on 1-D regression, with the relative movement of every layer per step;
- landscape.py: the loss of a scaled one-parameter model beside its linearisation.

steps.py holds the one fixed-step loop and its log-spaced checkpoints; folder.py the experiment folder that
keeps every finished network, so that a killed command continues where it stopped.
"""
