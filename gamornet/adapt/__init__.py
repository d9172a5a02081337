"""Adapting a trained model to an astronomer's own labels: several starting models, cross-validation, reports.

:func:`adapt` fine-tunes GaMorNet from several starting models (by default
the simulation-only and the final published SDSS models) on the same labelled
galaxies, with the same split and seed, and keeps the start that validates
best; with ``folds`` it cross-validates each start (stratified folds), writes
out-of-fold predictions and their scores, and trains the final model.
:func:`resume_adapt` continues an interrupted adaptation.  ``gamornet tl``
with several ``--model`` or with ``--folds`` runs it from the command line.
"""

from gamornet.adapt.folds import check_folds, stratified_folds
from gamornet.adapt.report import write_report
from gamornet.adapt.runs import TL_OPTIONS, start_names
from gamornet.adapt.workflow import FINALS, AdaptResult, adapt, resume_adapt

__all__ = ["adapt", "resume_adapt", "AdaptResult", "FINALS", "TL_OPTIONS", "stratified_folds", "check_folds",
           "start_names", "write_report"]
