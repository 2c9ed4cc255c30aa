# PLACEHOLDER: replaced by the real module during development.
class SolverModel:
    pass

def wrap(model): raise NotImplementedError
