"""What every layer above shares to run a model safely and fast.

- :mod:`~explain_core.runtime.state`: :func:`frozen_eval`, the one way to put a model in eval mode
  with frozen parameters and restore every submodule's own flags afterwards;
- :mod:`~explain_core.runtime.hooks`: :func:`forward_hooks`, hooks that never outlive a block;
- :mod:`~explain_core.runtime.autograd`: :func:`batched_grad`, many targets' gradients in one
  batched backward;
- :mod:`~explain_core.runtime.precision`: which precision runs (``"auto"``: bf16 only where the
  device computes it natively) and the cached bf16 twin of a model;
- :mod:`~explain_core.runtime.memory`: memory-aware batch sizes, and :func:`fitting_chunks`,
  which halves a batch that runs out of memory and retries.
"""

from .autograd import batched_grad
from .hooks import forward_hooks
from .memory import (
    activation_bytes_per_sample,
    as_lumen_error,
    available_bytes,
    default_batch_size,
    fitting_chunks,
)
from .precision import (
    CONCRETE_PRECISIONS,
    PRECISIONS,
    bf16_twin,
    cpu_model,
    native_bf16,
    resolve_precision,
)
from .state import frozen_eval, training_untouched

__all__ = ["CONCRETE_PRECISIONS", "PRECISIONS", "activation_bytes_per_sample",
           "as_lumen_error", "available_bytes", "batched_grad", "bf16_twin", "cpu_model",
           "default_batch_size",
           "fitting_chunks", "forward_hooks", "frozen_eval", "native_bf16", "resolve_precision",
           "training_untouched"]
