"""minillama4: Llama 4 (Scout, Maverick) built from scratch in PyTorch, exact to the reference."""

from .cache import KVCache
from .checkpoint import from_pretrained, load_config, save_pretrained
from .config import Llama4Config
from .model import Llama4
from . import parallel  # noqa: F401  (before any process group exists: see parallel.py)
from .vision import VisionConfig

__all__ = ["Llama4", "Llama4Config", "VisionConfig", "KVCache", "from_pretrained", "save_pretrained", "load_config"]
__version__ = "0.1.0"
