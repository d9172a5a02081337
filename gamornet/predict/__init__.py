"""Survey-scale prediction from files: inputs, FITS reading, checks, chunks, tables, and :func:`predict_files`.

The pipeline, in the order the data flows: :mod:`~gamornet.predict.inputs`
(one reference per image), :mod:`~gamornet.predict.fits` (reading FITS
cutouts), :mod:`~gamornet.predict.images` (checks before anything is
predicted, batches read ahead), :mod:`~gamornet.predict.passes` (the
forward pass: :class:`~gamornet.predict.passes.ForwardSpec` describes it,
:class:`~gamornet.predict.passes.ForwardPass` runs it on the chosen
*engine*), :mod:`~gamornet.predict.chunks` (finished work kept for
resuming) and :mod:`~gamornet.predict.tables` (the output table, shards,
merging).  :mod:`~gamornet.predict.files` holds :func:`predict_files`,
which runs it, in this process or on a Dask cluster
(:mod:`~gamornet.predict.distributed`).

The forward pass runs on the *engine* (what computes the probabilities:
``keras``, ``openvino`` or ``tflearn``) and in the precision asked for
(``engine=``, ``precision=``; ``gamornet predict --engine --precision``):
by default OpenVINO in float32 where no NVIDIA GPU is visible
(within float32 rounding of Keras, faster to start, no TensorFlow import
once the model's conversion is stored), else Keras.  What each choice costs
in speed, agreement and install size: :mod:`gamornet.engines`.  Every
table records the engine and precision that produced it (metadata
``engine``, ``precision``); tables of different engines or precisions are
neither resumed nor merged together.
"""

from gamornet.predict.files import predict_files
from gamornet.predict.tables import merge_tables, read_table

__all__ = ["predict_files", "merge_tables", "read_table"]
