"""The pure core: bytes in, values out, typed errors; no sockets, no files, no await."""
