"""Evaluation: triangulation, MAC counting, energy model, firing rates, the evaluation loop and its report.

Submodules are imported explicitly (``from hybridjax.eval import energy``) so that importing the package stays
cheap and the numpy-only parts do not pull in the models.
"""
