"""Dataset building: real photos, crops and synthetic photos at any H x W, box statistics and framings,
box-aware augmentation, preview grids, and the `digitloc-data` CLI. Reads annotations; trains nothing."""
