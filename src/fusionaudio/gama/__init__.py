"""Model code: config, modules, key maps and loading."""

from fusionaudio.gama.config import GamaConfig
from fusionaudio.gama.modeling import GamaForCausalLM
from fusionaudio.gama.loading import load_model

__all__ = ["GamaConfig", "GamaForCausalLM", "load_model"]
