"""digitloc.export."""
