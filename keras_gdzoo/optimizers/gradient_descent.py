# PLACEHOLDER: replaced by the real module during development.
class GradientDescent:
    pass

class Momentum:
    pass

class NesterovMomentum:
    pass

