"""Integer arguments (roots, counts, world sizes): anything `operator.index` accepts, so
NumPy integers work like Python ints; bool is refused (True is not a rank)."""
import operator


def as_int(value, name, low=0, high=None):
    """`value` as a Python int in [low, high) (high None: no upper bound); ValueError
    naming `name` and the valid range otherwise."""
    bound = f"[{low}, {high})" if high is not None else f">= {low}"
    try:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer {bound}, got {value!r} "
                         f"({type(value).__name__})") from None
    if number < low or (high is not None and number >= high):
        raise ValueError(f"{name} must be an integer {bound}, got {number}")
    return number
