"""The encoder (stacked blocks), checkpoint conversion and loading."""

from jaxtransfer.models.bert import EncoderConfig, hidden_states, init_params
from jaxtransfer.models.pretrained import Pretrained, load_pretrained
