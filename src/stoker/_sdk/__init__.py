"""The SDK's implementation; the public surface is :mod:`stoker`."""
