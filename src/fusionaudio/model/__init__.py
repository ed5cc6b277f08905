"""Model code: config, modules, key maps and loading."""

from .config import GamaConfig
from .gama import GamaForCausalLM
from .loading import load_model

__all__ = ["GamaConfig", "GamaForCausalLM", "load_model"]
