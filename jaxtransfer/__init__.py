"""jaxtransfer: which pretrained layers matter for transfer, and how much."""

from jaxtransfer.models import EncoderConfig, Pretrained, hidden_states, load_pretrained

__version__ = '0.1.0'
__all__ = ['EncoderConfig', 'Pretrained', 'hidden_states', 'load_pretrained']
