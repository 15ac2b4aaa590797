"""The one place the version is written.

pyproject.toml reads it (scikit-build-core's regex metadata provider), so the
package metadata, ``bpcore.__version__``, ``bpcore --version`` and the
``bpcore_version`` field of model files all agree.
"""
__version__ = "0.1.0"
