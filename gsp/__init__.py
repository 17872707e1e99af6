"""The application layer: the ``gsp`` command line, training, evaluation and the demo.

It sits on top of everything (``groundstation`` core, ``enhancer``, ``flows``/``tasks``) and nothing imports it.
"""
