"""Media handling: reference-image download (``fetch``) and validation (``validate``), among others."""
