# PLACEHOLDER: replaced by the real module during development.
class ConjugateGradient:
    pass

class SteepestDescent:
    pass

