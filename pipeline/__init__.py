"""echonest-pipeline: Echo Nest audio analyses into a bucketed Avro warehouse, kept current daily.

All logic lives in this package; the Luigi tasks in ``tasks/`` only wire parameters,
dependencies and outputs to the functions here.
"""

__version__ = "0.1.0"
