"""wnbook: the code and data of the book "Weight Normalization, interactively" (not part of wnlib).

The chapters (``book/*.ipynb``) are narrative plus calls into this package; the weight norm itself
always comes from :mod:`wnlib`, which never imports wnbook. Install it with ``pip install -e book``
(it depends on ``wnlib[experiments]``, matplotlib, ipywidgets, IPython and scikit-learn). Layout:

Shared modules, named by what they are:

- :mod:`wnbook.style`: the one palette, labels and matplotlib settings (:func:`~wnbook.style.use_book_style`);
- :mod:`wnbook.source`: :func:`~wnbook.source.show_source`, a function's code shown on a page;
- :mod:`wnbook.tables`: the one Markdown-table writer;
- :mod:`wnbook.files`: the package's data files (``wnbook/data/``: benchmark tables, the committed
  experiment cache), found with :mod:`importlib.resources`;
- :mod:`wnbook.datasets`: the one loader of scikit-learn's digits;
- :mod:`wnbook.models`: the small networks the chapters build;
- :mod:`wnbook.training`: the chapters' training loops;
- :mod:`wnbook.baselines`: normalizations wnlib does not implement (weight standardization, spectral
  norm, power iteration; centered weight norm on wnlib's ops), for comparison;
- :mod:`wnbook.stats`: statistics of runs and spectra;
- :mod:`wnbook.benchmarks`: the parser of the table ``python -m wnlib.bench`` writes, and its verdicts.

Per-chapter modules, in :mod:`wnbook.chapters` (one per page, named like the notebook; each holds that
page's remaining computations, its figures and widgets): ``theory`` (and ``covariance``, its
gradient-covariance section), ``implementation``, ``initialization``, ``mean_only_bn``,
``experiments``, ``vae``, ``dqn``, ``beyond``, ``after``, ``a2q``.
"""
