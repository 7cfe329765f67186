"""pytest configuration for the whole checkout: which modules ``--doctest-modules`` may import.

``make unit`` runs the docstring examples of wnlib (``pytest --doctest-modules tests wnlib``).
:mod:`wnlib.kernels.triton_wn` needs Triton (the ``wnlib[gpu]`` extra): where Triton is not installed,
importing it raises the named-extra ImportError (checked by ``tests/test_packaging.py``), so its
docstrings are not collected. ``find_spec`` looks for Triton without importing it, which must wait
until ``tests/conftest.py`` has chosen Triton's interpreter.
"""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("triton") else ["wnlib/kernels/triton_wn.py"]
