"""Kokoro-82M written natively in PyTorch (batched, few launches), for the torch backend."""
