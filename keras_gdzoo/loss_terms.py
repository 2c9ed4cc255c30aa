"""The compiled losses of a wrapped model, one `LossTerm` per output, and
which kind of objective a wrapper has (see `keras_gdzoo.objectives`)."""

import keras
import tensorflow as tf

# Canonical names of the losses the curvature module knows.
_LOSS_NAMES = {
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
    "meansquarederror": "mean_squared_error",
    "binary_crossentropy": "binary_crossentropy",
    "binarycrossentropy": "binary_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "categoricalcrossentropy": "categorical_crossentropy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "sparsecategoricalcrossentropy": "sparse_categorical_crossentropy",
}

_REDUCTIONS = ("sum_over_batch_size", "sum")


class LossTerm:
    """One compiled loss: per-example function, name, weight and reduction."""

    def __init__(self, loss, weight=1.0, output=None):
        self.loss = loss
        self.weight = float(weight)
        self.output = output
        self.reduction = "sum_over_batch_size"
        self.from_logits = False
        if isinstance(loss, str):
            self.function = keras.losses.get(loss)
            self.name = _LOSS_NAMES.get(loss.lower())
        elif isinstance(loss, keras.losses.Loss):
            config = loss.get_config()
            self.function = loss.call
            self.name = _LOSS_NAMES.get(type(loss).__name__.lower())
            self.from_logits = bool(config.get("from_logits", False))
            self.reduction = config.get("reduction", "sum_over_batch_size")
            if self.reduction not in _REDUCTIONS:
                raise ValueError(
                    "Full-batch solvers support the loss reductions "
                    f"{', '.join(map(repr, _REDUCTIONS))}. Received: "
                    f"reduction={self.reduction!r} for loss={loss!r}"
                )
        elif callable(loss):
            self.function = loss
            self.name = _LOSS_NAMES.get(getattr(loss, "__name__", "").lower())
        else:
            raise ValueError(f"Cannot use this loss with a solver. Received: loss={loss!r}")

    def describe(self):
        if isinstance(self.loss, str):
            return self.loss
        return self.name or getattr(self.loss, "name", None) or getattr(
            self.loss, "__name__", repr(self.loss)
        )


def loss_terms(loss, loss_weights, output_names):
    """The compiled loss as a list of `LossTerm`s, one per output."""
    if isinstance(loss, dict):
        unknown = sorted(set(loss) - set(output_names))
        if unknown:
            raise ValueError(
                f"The loss names outputs {unknown} that the model does not have "
                f"(outputs: {list(output_names)}). Received: loss={loss!r}"
            )
        weights = loss_weights or {}
        if not isinstance(weights, dict):
            weights = dict(zip(output_names, weights))
        return [
            LossTerm(loss[name], weights.get(name, 1.0), output=index)
            for index, name in enumerate(output_names)
            if loss.get(name) is not None
        ]
    if isinstance(loss, (list, tuple)):
        if len(loss) != len(output_names):
            raise ValueError(
                f"The model has {len(output_names)} outputs; a list of losses needs "
                f"one per output. Received: loss={loss!r}"
            )
        weights = loss_weights or [1.0] * len(loss)
        if isinstance(weights, dict):
            weights = [weights.get(name, 1.0) for name in output_names]
        return [
            LossTerm(item, weight, output=index)
            for index, (item, weight) in enumerate(zip(loss, weights))
            if item is not None
        ]
    weight = 1.0
    if isinstance(loss_weights, (int, float)):
        weight = loss_weights
    elif isinstance(loss_weights, (list, tuple)) and len(loss_weights) == 1:
        weight = loss_weights[0]
    if len(output_names) > 1:
        # One loss for every output, as Keras applies it.
        return [LossTerm(loss, weight, output=index) for index in range(len(output_names))]
    return [LossTerm(loss, weight, output=None)]


def _outputs(y_pred):
    """The model output as a list of tensors (one per output)."""
    if isinstance(y_pred, dict):
        return list(y_pred.values())
    if isinstance(y_pred, (list, tuple)):
        return list(y_pred)
    return [y_pred]


def _select(structure, index, names):
    """Output `index` of a per-output structure (targets, sample weights)."""
    if structure is None or index is None:
        return structure
    if isinstance(structure, dict):
        return structure.get(names[index])
    if isinstance(structure, (list, tuple)):
        return structure[index]
    return structure


def _rows(t):
    static = t.shape[0]
    return static if static is not None else tf.shape(t)[0]


def overrides_compute_loss(network):
    """Whether a (subclassed) model defines its own `compute_loss`."""
    return type(network).compute_loss is not keras.Model.compute_loss


def objective_of(trainer):
    """(kind, loss terms, residual function, residual weights) of a wrapper."""
    residuals = getattr(trainer, "residuals", None)
    if residuals is not None:
        return "residuals", [], residuals, getattr(trainer, "residual_weights", None)
    network = getattr(trainer, "model", trainer)
    loss = getattr(trainer, "_gz_loss", None)
    if loss is None and overrides_compute_loss(network):
        return "custom", [], None, None
    if loss is None:
        raise ValueError(
            "A solver needs an objective: compile with a `loss`, give the wrapped "
            "model a `compute_loss` method, or wrap it with `residuals=`. "
            "Received: loss=None"
        )
    names = list(getattr(network, "output_names", None) or ["output"])
    return "compiled", loss_terms(loss, getattr(trainer, "_gz_loss_weights", None), names), None, None
