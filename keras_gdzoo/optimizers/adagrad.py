# PLACEHOLDER: replaced by the real module during development.
class AdaGrad:
    pass

