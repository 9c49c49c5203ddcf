"""Test helpers that ship with the package, so plugins and users can test against them.

:mod:`modelmora.testing.hub_emulator` is a real HTTP server that emulates the Hugging Face
Hub; see docs/testing.md.
"""
