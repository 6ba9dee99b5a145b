"""digitloc-serve: an HTTP API and a web page over the runtime's Detector (optional extra `serve`)."""
