"""Python source to a checked program description (see docs/language.md).

`module.load_module` finds declarations; `typing` holds the integer typing rules; `tracepoint`
and `helpers` describe contexts and kernel helpers. Codegen walks function ASTs with these.
"""
from .module import Diagnostics, ModuleInfo, load_module  # noqa: F401
