# PLACEHOLDER: replaced by the real module during development.
class _Nothing:
    pass

