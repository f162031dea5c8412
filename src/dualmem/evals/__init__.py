"""Test protocols, one module each."""
