# PLACEHOLDER: replaced by the real module during development.
class Adam:
    pass

class Adamax:
    pass

class Nadam:
    pass

