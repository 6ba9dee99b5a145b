"""The exporter's one error type for what a user can get wrong."""


class ExportError(ValueError):
    """A model, calibration set or output the exporter cannot use; nothing was written."""
