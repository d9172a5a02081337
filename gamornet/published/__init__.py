"""The published GaMorNet models (Ghosh et al. 2020 data release): registry, cache, downloads.

- :mod:`gamornet.published.registry`: the models, their files, input shapes
  and threshold policies;
- :mod:`gamornet.published.cards`: model cards (band, pixel scale, cutout,
  redshift, preprocessing, policy, training of each model);
- :mod:`gamornet.published.download`: a generic fetcher (mirrors, retries,
  checks passed in as callbacks);
- :mod:`gamornet.published.models`: the cache of published models and
  :func:`~gamornet.published.models.resolve_model_path`.
"""
