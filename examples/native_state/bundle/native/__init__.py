"""A model whose state lives in native code (libc's random generator, through ctypes)."""
