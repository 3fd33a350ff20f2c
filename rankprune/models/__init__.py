"""Networks built from a list of hidden widths, one module per family behind one seam (models.base).

No training code here. `FAMILIES` (from models.base) is the only list of family names; importing this
package registers every family.
"""

from rankprune.models.base import (
    FAMILIES, Group, Family, Network, activation_inputs, activation_rows, family_of, get_family, width_for_parameters,
)
from rankprune.models.cnn import CNN
from rankprune.models.mlp import MLP, build_mlp, forward_flops, parameter_count
from rankprune.models.transformer import Transformer

__all__ = [
    "FAMILIES", "Group", "Family", "Network", "activation_inputs", "activation_rows", "family_of", "get_family", "width_for_parameters",
    "MLP", "CNN", "Transformer", "build_mlp", "parameter_count", "forward_flops",
]
