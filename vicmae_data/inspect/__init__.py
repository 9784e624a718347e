"""Looking inside a .beton: ``info``, ``verify``, ``read`` (one sample as pixels), ``preview``."""
