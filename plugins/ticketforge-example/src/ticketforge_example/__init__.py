"""An example ticketforge plugin: the ERK layer-wise pruning schedule (copy this layout for your own).

The schedule is :mod:`ticketforge_example.erk`; this package imports nothing, so that loading the
registration (:mod:`ticketforge_example.plugin`) does not import torch.
"""
