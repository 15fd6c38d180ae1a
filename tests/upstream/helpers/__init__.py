"""Stand-ins for the ``helpers`` package of openai-chatkit's test suite (see ``../README.md``)."""
