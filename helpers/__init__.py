"""Shared code for the MNIST notebooks: data, model, training, studies, evaluation, plots."""
