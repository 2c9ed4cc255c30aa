# PLACEHOLDER: replaced by the real module during development.
class StepDecay:
    pass

class ExponentialDecay:
    pass

class InverseTimeDecay:
    pass

