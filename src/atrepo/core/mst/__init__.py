"""The Merkle Search Tree: repo path -> record CID, with a unique shape per key set."""

from __future__ import annotations

from .layer import common_prefix_length, key_layer
from .node import Node, decode_node, encode_node
from .tree import MST

__all__ = ["MST", "Node", "common_prefix_length", "decode_node", "encode_node", "key_layer"]
