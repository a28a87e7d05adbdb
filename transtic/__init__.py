"""TransTIC: a Transformer image codec transferred to machine perception with prompts."""

__version__ = "0.1.0"
