"""jaxtransfer: which pretrained layers matter for transfer, and how much."""

from jaxtransfer.models.bert import hidden_states
from jaxtransfer.models.config import EncoderConfig
from jaxtransfer.models.pretrained import Pretrained, load_pretrained

__version__ = '0.1.0'
__all__ = ['EncoderConfig', 'Pretrained', 'hidden_states', 'load_pretrained']
