# PLACEHOLDER: replaced by the real module during development.
class BFGS:
    pass

class LBFGS:
    pass

