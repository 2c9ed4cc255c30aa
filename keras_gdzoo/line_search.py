# PLACEHOLDER: replaced by the real module during development.
class StrongWolfe:
    pass

class Backtracking:
    pass

class Exact:
    pass

