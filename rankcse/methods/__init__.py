"""Contrastive methods, one file each, registered by name (see :func:`get_method`)."""

from rankcse.methods import esimcse, infocse, mixcse, promptbert, simcse  # noqa: F401  (registers)
from rankcse.methods.base import METHODS, Method, MethodArgs, MethodOutput, Recipe, build_args, get_method, register_method

__all__ = ["METHODS", "Method", "MethodArgs", "MethodOutput", "Recipe", "build_args", "get_method", "register_method"]
