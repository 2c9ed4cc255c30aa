"""The base class of the per-parameter optimizers: sparse gradients done right.

An `Embedding` layer's gradient is a `tf.IndexedSlices` with one slice per
token of the batch, so a token seen twice (at rows i and i') arrives as two
slices a and b with the same index. Their sum a + b is the gradient; but an
element-wise square or absolute value taken slice by slice gives a^2 + b^2 or
|a| + |b| once the slices are scattered into the variable, which is what
`keras.optimizers.Adagrad`, `RMSprop`, `Adam`, ... do. Here duplicate indices
are summed first (`merge_duplicate_indices`), so the sparse update is the
dense gradient's update, and the slots stay sparse where the method allows.
"""

import keras
import tensorflow as tf
from keras import ops


def merge_duplicate_indices(gradient):
    """`gradient` with the slices of equal indices summed (IndexedSlices);
    any other gradient (a dense tensor, None) is returned unchanged.

    For slices (v_k, i_k), k = 1..K, the result has one slice per distinct
    index j: (sum over {k: i_k = j} of v_k, j), which scatters into the same
    dense tensor as `gradient` (`tf.convert_to_tensor` also sums duplicates).
    """
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    indices, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(
        gradient.values, positions, tf.shape(indices)[0]
    )
    return tf.IndexedSlices(values, indices, gradient.dense_shape)


class PerParameterOptimizer(keras.optimizers.Optimizer):
    """A `keras.optimizers.Optimizer` whose sparse gradients have their
    duplicate indices merged: before the base class clips them (so `clipnorm`
    and `global_clipnorm` measure the true norm), and again in `update_step`
    (a distribution strategy's all-reduce concatenates the replicas' slices,
    which can repeat an index). Subclasses take the gradient through
    `self._gradient(gradient, variable)` at the top of `update_step`."""

    def apply(self, grads, trainable_variables=None):
        grads = [merge_duplicate_indices(g) for g in grads]
        return super().apply(grads, trainable_variables)

    @staticmethod
    def _gradient(gradient, variable):
        """The gradient with duplicate indices merged, in the variable's dtype."""
        return ops.cast(merge_duplicate_indices(gradient), variable.dtype)
