# expect: failed. Returns objects that answer every comparison with True: a plain object, an int
# subclass and a float subclass.


class Yes:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __lt__(self, other):
        return True

    __le__ = __gt__ = __ge__ = __lt__

    def __abs__(self):
        return 0

    def __sub__(self, other):
        return self

    __rsub__ = __add__ = __radd__ = __sub__

    def __hash__(self):
        return 0


class YesInt(int):
    __eq__ = Yes.__eq__
    __ne__ = Yes.__ne__
    __hash__ = int.__hash__


class YesFloat(float):
    __eq__ = Yes.__eq__
    __lt__ = Yes.__lt__
    __abs__ = Yes.__abs__
    __sub__ = Yes.__sub__
    __hash__ = float.__hash__


def add(a, b):
    if isinstance(a, float):
        return YesFloat(0)
    return YesInt(a - b) if a % 2 else Yes()
