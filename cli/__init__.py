"""The `parakeet` command line: transcribe, serve, stream, batch, convert, make-dataset."""
