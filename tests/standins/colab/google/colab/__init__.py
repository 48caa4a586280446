"""A stand-in of the `google.colab` package a Colab kernel imports (only what the notebooks call)."""
