"""SVHN digitStruct annotations: readers (.mat v7.3 and JSON), writers and checks."""

from digitloc.annotations.digitstruct import (
    AnnotationError,
    DigitBox,
    Problem,
    Record,
    read_annotations,
    read_json,
    read_mat,
    write_json,
)

__all__ = [
    "AnnotationError",
    "DigitBox",
    "Problem",
    "Record",
    "read_annotations",
    "read_json",
    "read_mat",
    "write_json",
]
