"""What the detector's int8 export quantizes, in names and numbers: imported by export (which must not
load Keras to read it) and by ``train.detector``'s snap onto the int8 grid."""

from __future__ import annotations

# Name parts of the layers the int8 export keeps in float (the neck's 1x1 laterals and adds, the heads and
# the decoding; export.detector says how they were chosen). The neck's 3x3 neck_conv is int8 all the same:
# tf2onnx folds its BatchNorm into it and renames it, so no name part reaches it (``int8_convolutions``).
DETECTOR_FLOAT = ("neck", "heat_conv", "box_conv", "head_conv", "heat_logits", "box_logits", "maps", "decode")
INT8_WEIGHT_LEVELS = 64  # the int8 export's weights: per output channel, symmetric, -64..64 (reduce_range)
