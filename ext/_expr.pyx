# cython: language_level=3, boundscheck=False, wraparound=False, always_allow_keywords=False
# cython: binding=False, embedsignature=False
"""Compiled expressions (flowlang._expr): the evaluator of lowered IR (the twin of
flowlang.expr.pyeval), field trees (flowlang.flow.model.generated_build) and the JSON walks
of values (flowlang.expr.values: json_length_exceeds, first_non_finite).

ext/flowlang._expr.pxd declares the node types, so that the compiled runtime calls nodes in C.
Node classes mirror the IR kinds one to one. Plain dicts, lists, strings and numbers take
C-level fast paths; everything else goes through flowlang.expr.values and
flowlang.expr.shared, the very functions the Python backend uses, so the two backends cannot
disagree on a cold path. Recursion depth is bounded by Limits.max_depth (hard cap 100).
"""

from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches, PyErr_Occurred
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport (
    PyUnicode_CopyCharacters,
    PyUnicode_DATA,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
    PyUnicode_New,
)
from libc.string cimport memcpy

cdef extern from "Python.h":
    # No ``except`` clause: NULL is either "missing" or an error that _lookup_failed sorts out.
    PyObject* PyDict_GetItemWithError(object mapping, object key)
    Py_UCS4 PyUnicode_MAX_CHAR_VALUE(object text)

# Parts of a template that Concat holds in a C array (more go through a list and "".join).
cdef enum:
    _HELD = 32

from flowlang.expr import ir as _ir
from flowlang.expr import values as _values
from flowlang.expr.shared import apply_filter as _apply_filter
from flowlang.expr.shared import limited_text as _limited_text
from flowlang.expr.shared import output_too_long as _output_too_long
from flowlang.expr.shared import undefined_error as _undefined_error

__all__ = ["build_evaluator", "build_tree", "first_non_finite", "json_length_exceeds"]

cdef object MISSING = object()
cdef object _lookup = _values.lookup
cdef object _to_text = _values.to_text
cdef object _int_text = _values.int_text
cdef object _equals = _values.equals
cdef object _order = _values.order
cdef object _truthy = _values.truthy
cdef object _contains = _values.contains
cdef object _starts_with = _values.starts_with
cdef object _ends_with = _values.ends_with

cdef enum CompareOp:
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOT_IN, OP_CONTAINS, OP_NOT_CONTAINS, OP_STARTS, OP_ENDS

cdef dict _OPERATORS = {
    "==": OP_EQ, "!=": OP_NE, "<": OP_LT, "<=": OP_LE, ">": OP_GT, ">=": OP_GE,
    "in": OP_IN, "not in": OP_NOT_IN, "contains": OP_CONTAINS, "not contains": OP_NOT_CONTAINS,
    "starts_with": OP_STARTS, "ends_with": OP_ENDS,
}
cdef tuple _ORDER_TEXT = ("", "", "<", "<=", ">", ">=")


# --- value semantics: fast paths, then the shared reference -------------------------------

cdef inline bint _is_plain_number(object value):
    cdef object kind = type(value)
    return kind is int or kind is float


cdef bint truthy(object value) except -1:
    cdef object kind = type(value)
    if value is None:
        return False
    if value is True:
        return True
    if value is False:
        return False
    if kind is str:
        return len(<str>value) > 0
    if kind is int or kind is float:
        return value != 0
    if kind is list:
        return PyList_GET_SIZE(value) > 0
    if kind is dict:
        return len(<dict>value) > 0
    return _truthy(value)


cdef bint equals(object a, object b) except -1:
    cdef object kind_a = type(a)
    cdef object kind_b = type(b)
    if kind_a is str and kind_b is str:
        return <str>a == <str>b
    if (kind_a is int or kind_a is float) and (kind_b is int or kind_b is float):
        return a == b
    if a is None:
        return b is None
    if b is None:
        return False
    return _equals(a, b)


cdef bint order(int op, object a, object b) except -1:
    if (_is_plain_number(a) and _is_plain_number(b)) or (type(a) is str and type(b) is str):
        if op == OP_LT:
            return a < b
        if op == OP_LE:
            return a <= b
        if op == OP_GT:
            return a > b
        return a >= b
    return _order(_ORDER_TEXT[op], a, b)


cdef bint contains(object container, object item) except -1:
    cdef Py_ssize_t position = 0
    cdef object element
    if type(container) is str and type(item) is str:
        return (<str>item) in (<str>container)
    if type(container) is list:
        # equals() may run code of a value (a custom Mapping, a subclass) that changes this
        # list: read the size every turn and hold a strong reference to the element compared,
        # exactly like Python's list iterator in the twin.
        while position < PyList_GET_SIZE(container):
            element = <object>PyList_GET_ITEM(container, position)
            if equals(element, item):
                return True
            position += 1
        return False
    return _contains(container, item)


cdef str text_of(object value, Py_ssize_t limit=-1):
    """The text of a value in rendered text (shared rules; fast for str, int, bool, null); the
    JSON of a list or map is refused before it is built when it would pass ``limit`` (-1: no
    limit)."""
    cdef object kind = type(value)
    if kind is str:
        return <str>value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return _int_decimal(value)
    if limit < 0:
        return _to_text(value)
    return _container_text(value, limit)


cdef str _int_decimal(object value):
    """values.int_text of an exact int: written here in C when it fits 64 bits (the common
    case: no Python call), else by values.int_text (also beyond the int-to-str digit limit)."""
    cdef int overflow = 0
    cdef long long number = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long magnitude
    cdef char digits[24]
    cdef Py_ssize_t start = 24
    cdef str text
    if overflow != 0:
        return _int_text(value)
    magnitude = (<unsigned long long>(-(number + 1)) + 1) if number < 0 else <unsigned long long>number
    while True:
        start -= 1
        digits[start] = <char>(48 + magnitude % 10)  # 48: '0'
        magnitude //= 10
        if magnitude == 0:
            break
    if number < 0:
        start -= 1
        digits[start] = 45  # '-'
    text = PyUnicode_New(24 - start, 127)
    memcpy(PyUnicode_DATA(text), &digits[start], 24 - start)
    return text


cdef str _container_text(object value, Py_ssize_t limit):
    """shared.limited_text, with the measure of exact lists and dicts done here in C."""
    cdef PyObject* path[64]
    cdef Py_ssize_t total
    cdef object kind = type(value)
    if kind is list or kind is dict:
        total = _json_total(value, 0, limit, 0, path)
        if total > limit:
            raise _output_too_long(limit)
        if total >= 0:
            return _to_text(value)
    return _limited_text(value, limit)


# --- nodes ----------------------------------------------------------------------------------

from sys import intern as _intern


cdef int _lookup_failed() except -1:
    """After a NULL from PyDict_GetItemWithError: an error raised by a key's ``__eq__`` or
    ``__hash__`` (an ``Exception``) means "missing", as in the twin (pyeval._static_step); other
    errors (KeyboardInterrupt) propagate. Returns 0 for missing."""
    if PyErr_Occurred() is NULL:
        return 0
    if PyErr_ExceptionMatches(Exception):
        PyErr_Clear()
        return 0
    return -1


cdef inline object dict_get(object mapping, object key):
    """``mapping[key]`` of an exact dict, or MISSING (also when a key's dunder raised)."""
    cdef PyObject* found = PyDict_GetItemWithError(mapping, key)
    if found is NULL:
        _lookup_failed()
        return MISSING
    return <object>found


cdef object _interned(object key):
    """Keys and roots are interned, so that looking them up in dicts whose keys are interned
    too (literals, other fields of the same flow) compares pointers, not text."""
    return _intern(key) if type(key) is str else key


cdef class Node:
    """A compiled IR node: ``eval`` computes its value in a context."""

    cdef object eval(self, object context):
        raise NotImplementedError


cdef class Const(Node):
    cdef object value

    def __cinit__(self, object value):
        self.value = value

    cdef object eval(self, object context):
        return self.value


cdef class Key:
    """A static key, with fast lookups in exact dicts and lists."""
    cdef object key
    cdef object alternate
    cdef bint has_index
    cdef Py_ssize_t index

    def __cinit__(self, object key, object alternate):
        self.key = _interned(key)
        self.alternate = _interned(alternate)
        index = key if type(key) is int else alternate if type(alternate) is int else None
        self.has_index = index is not None and -(2 ** 62) < index < 2 ** 62
        self.index = index if self.has_index else 0

    cdef inline object step(self, object container):
        cdef PyObject* found
        cdef Py_ssize_t size, position
        if type(container) is dict:
            found = PyDict_GetItemWithError(container, self.key)
            if found is NULL:
                _lookup_failed()
                if self.alternate is None:
                    return MISSING
                return dict_get(container, self.alternate)
            return <object>found
        if type(container) is list:
            if not self.has_index:
                return MISSING
            size = PyList_GET_SIZE(container)
            position = self.index
            if position < 0:
                position += size
            if 0 <= position < size:
                return <object>PyList_GET_ITEM(container, position)
            return MISSING
        present, value = _lookup(container, self.key)
        return value if present else MISSING


cdef inline object root_value(object context, object root):
    if type(context) is dict:
        return dict_get(context, root)
    present, value = _lookup(context, root)
    return value if present else MISSING


cdef class StaticPath(Node):
    """A lenient path of static keys from a context root: the common case."""
    cdef object root
    cdef tuple keys

    def __cinit__(self, object root, tuple keys):
        self.root = _interned(root)
        self.keys = keys

    cdef object eval(self, object context):
        cdef object value = root_value(context, self.root)
        cdef Key key
        for key in self.keys:
            if value is MISSING or value is None:
                return None
            value = key.step(value)
        return None if value is MISSING else value


cdef class Path(Node):
    """Any path: computed keys, a computed base, or strict mode."""
    cdef object root
    cdef Node base
    cdef tuple segments  # Key, or Node for a computed key
    cdef bint strict
    cdef object labels  # flowlang.expr.ir.PathLabels
    cdef tuple segment_labels

    def __cinit__(self, object root, Node base, tuple segments, bint strict, object labels,
                  tuple segment_labels):
        self.root = _interned(root)
        self.base = base
        self.segments = segments
        self.strict = strict
        self.labels = labels
        self.segment_labels = segment_labels

    cdef object eval(self, object context):
        cdef object value
        cdef object found
        cdef Py_ssize_t position = 0
        if self.base is None:
            value = root_value(context, self.root)
            if value is MISSING:
                if self.strict:
                    raise _undefined_error(self.labels, self.segment_labels, -1, None, self.root)
                return None
        else:
            value = self.base.eval(context)
        for segment in self.segments:
            if value is None:
                if self.strict:
                    raise _undefined_error(self.labels, self.segment_labels, position, value, self.root)
                return None
            if type(segment) is Key:
                found = (<Key>segment).step(value)
            else:
                present, found = _lookup(value, (<Node>segment).eval(context))
                if not present:
                    found = MISSING
            if found is MISSING:
                if self.strict:
                    raise _undefined_error(self.labels, self.segment_labels, position, value, self.root)
                return None
            value = found
            position += 1
        return value


cdef class Concat(Node):
    cdef tuple parts  # str for literal text, Node otherwise
    cdef Py_ssize_t limit

    def __cinit__(self, tuple parts, Py_ssize_t limit):
        self.parts = parts
        self.limit = limit

    cdef object eval(self, object context):
        """The parts' texts in order, each hole rendered as its text; the total is checked
        against the limit after each part, as in the twin (pyeval's concat). Up to _HELD parts
        are held in a C array and copied once into a string of the final size."""
        cdef PyObject* held[_HELD]
        cdef Py_ssize_t count = len(self.parts)
        cdef Py_ssize_t filled = 0
        cdef Py_ssize_t total = 0
        cdef Py_ssize_t index
        cdef Py_UCS4 widest = 0
        cdef Py_UCS4 width
        cdef object part
        cdef str text
        if count > _HELD:
            return self._eval_many(context)
        try:
            for index in range(count):
                part = <object>PyTuple_GET_ITEM(self.parts, index)
                if type(part) is str:
                    text = <str>part
                else:
                    text = text_of((<Node>part).eval(context), self.limit)
                total += PyUnicode_GET_LENGTH(text)
                if total > self.limit:
                    raise _output_too_long(self.limit)
                Py_INCREF(text)
                held[filled] = <PyObject*>text
                filled += 1
                width = PyUnicode_MAX_CHAR_VALUE(text)
                if width > widest:
                    widest = width
            return _joined(held, filled, total, widest)
        finally:
            for index in range(filled):
                Py_XDECREF(held[index])

    cdef object _eval_many(self, object context):
        cdef list pieces = []
        cdef Py_ssize_t total = 0
        cdef str text
        for part in self.parts:
            if type(part) is str:
                text = <str>part
            else:
                text = text_of((<Node>part).eval(context), self.limit)
            total += len(text)
            if total > self.limit:
                raise _output_too_long(self.limit)
            pieces.append(text)
        return "".join(pieces)


cdef str _joined(PyObject** pieces, Py_ssize_t count, Py_ssize_t total, Py_UCS4 widest):
    """``"".join`` of ``count`` strings whose lengths add up to ``total`` and whose widest
    character is ``widest``: one allocation, one copy per piece."""
    cdef str result
    cdef str piece
    cdef Py_ssize_t index, length
    cdef Py_ssize_t position = 0
    cdef unsigned int kind
    cdef char* data
    if count == 1:
        return <str>pieces[0]
    result = PyUnicode_New(total, widest)
    kind = PyUnicode_KIND(result)
    data = <char*>PyUnicode_DATA(result)
    for index in range(count):
        piece = <str>pieces[index]
        length = PyUnicode_GET_LENGTH(piece)
        if PyUnicode_KIND(piece) == kind:
            memcpy(data + position * kind, PyUnicode_DATA(piece), length * kind)
        else:
            PyUnicode_CopyCharacters(result, position, piece, 0, length)
        position += length
    return result


cdef class Not(Node):
    cdef Node operand

    def __cinit__(self, Node operand):
        self.operand = operand

    cdef object eval(self, object context):
        return not truthy(self.operand.eval(context))


cdef class Truth(Node):
    """``and`` (stop at the first false operand) or ``or`` (stop at the first true one)."""
    cdef tuple operands
    cdef bint stop_on

    def __cinit__(self, tuple operands, bint stop_on):
        self.operands = operands
        self.stop_on = stop_on

    cdef object eval(self, object context):
        cdef Node operand
        for operand in self.operands:
            if truthy(operand.eval(context)) == self.stop_on:
                return self.stop_on
        return not self.stop_on


cdef class Coalesce(Node):
    cdef tuple operands

    def __cinit__(self, tuple operands):
        self.operands = operands

    cdef object eval(self, object context):
        cdef Node operand
        cdef object value = None
        for operand in self.operands:
            value = operand.eval(context)
            if value is not None:
                return value
        return value


cdef class Compare(Node):
    cdef int op
    cdef Node left
    cdef Node right

    def __cinit__(self, int op, Node left, Node right):
        self.op = op
        self.left = left
        self.right = right

    cdef object eval(self, object context):
        cdef object a = self.left.eval(context)
        cdef object b = self.right.eval(context)
        cdef int op = self.op
        if op == OP_EQ:
            return equals(a, b)
        if op == OP_NE:
            return not equals(a, b)
        if op <= OP_GE:
            return order(op, a, b)
        if op == OP_IN:
            return contains(b, a)
        if op == OP_NOT_IN:
            return not contains(b, a)
        if op == OP_CONTAINS:
            return contains(a, b)
        if op == OP_NOT_CONTAINS:
            return not contains(a, b)
        if op == OP_STARTS:
            if type(a) is str and type(b) is str:
                return (<str>a).startswith(<str>b)
            return bool(_starts_with(a, b))
        if type(a) is str and type(b) is str:
            return (<str>a).endswith(<str>b)
        return bool(_ends_with(a, b))


cdef class Pipe(Node):
    cdef Node operand
    cdef tuple filters  # (name, function, builtin, tuple of Node)
    cdef Py_ssize_t limit

    def __cinit__(self, Node operand, tuple filters, Py_ssize_t limit):
        self.operand = operand
        self.filters = filters
        self.limit = limit

    cdef object eval(self, object context):
        cdef object value = self.operand.eval(context)
        cdef list arguments
        cdef Node arg
        for name, function, builtin, args in self.filters:
            arguments = [arg.eval(context) for arg in <tuple>args]
            value = _apply_filter(name, function, builtin, value, arguments, self.limit)
        return value


cdef class MakeList(Node):
    cdef tuple items

    def __cinit__(self, tuple items):
        self.items = items

    cdef object eval(self, object context):
        cdef Node item
        return [item.eval(context) for item in self.items]


cdef class Evaluator:
    """Holds the root node; ``render`` is what Template.render is bound to."""
    cdef Node root

    def __cinit__(self, Node root):
        self.root = root

    def render(self, context):
        """Evaluate against ``context``."""
        return self.root.eval(context)


# --- IR to nodes ----------------------------------------------------------------------------

cdef Node build(object node, Py_ssize_t limit):
    kind = type(node)
    if kind is _ir.Const:
        return Const(node.value)
    if kind is _ir.Path:
        static = all(type(segment) is _ir.StaticKey for segment in node.segments)
        if static and node.base is None and not node.strict:
            return StaticPath(node.root, tuple(Key(s.key, s.alternate) for s in node.segments))
        segments = tuple(
            Key(s.key, s.alternate) if type(s) is _ir.StaticKey else build(s.index, limit)
            for s in node.segments
        )
        base = build(node.base, limit) if node.base is not None else None
        return Path(node.root, base, segments, node.strict, node.labels, node.segment_labels)
    if kind is _ir.Concat:
        parts = tuple(
            part.value if type(part) is _ir.Const and type(part.value) is str else build(part, limit)
            for part in node.parts
        )
        return Concat(parts, limit)
    if kind is _ir.Not:
        return Not(build(node.operand, limit))
    if kind is _ir.And or kind is _ir.Or:
        return Truth(tuple(build(item, limit) for item in node.operands), kind is _ir.Or)
    if kind is _ir.Coalesce:
        return Coalesce(tuple(build(item, limit) for item in node.operands))
    if kind is _ir.Compare:
        return Compare(_OPERATORS[node.op], build(node.left, limit), build(node.right, limit))
    if kind is _ir.Pipe:
        filters = tuple(
            (item.name, item.function, item.builtin, tuple(build(arg, limit) for arg in item.args))
            for item in node.filters
        )
        return Pipe(build(node.operand, limit), filters, limit)
    if kind is _ir.MakeList:
        return MakeList(tuple(build(item, limit) for item in node.items))
    raise TypeError(f"not an IR node: {node!r}")


def build_evaluator(node, max_output):
    """Compile lowered IR into a function of the context (a bound method, called fast)."""
    return Evaluator(build(node, max_output)).render


# --- field trees ---------------------------------------------------------------------------

cdef class PythonCall(Node):
    """A field whose render is not a compiled template (a list of values, a literal to copy,
    a template of the Python backend): called as Python."""
    cdef object render

    def __cinit__(self, object render):
        self.render = render

    cdef object eval(self, object context):
        return self.render(context)


cdef Node node_of(object render):
    """The node that renders a field: the root of a compiled template, else a PythonCall."""
    owner = getattr(render, "__self__", None)
    if type(owner) is Evaluator:
        return (<Evaluator>owner).root
    return PythonCall(render)


cdef class TreeBuilder(Node):
    """Twin of the generated ``build`` of flowlang.flow.model.FieldTree: a fresh dict per call,
    keys in document order, nested trees built inline."""

    def __cinit__(self, tuple keys, tuple parts):
        self.keys = keys
        self.parts = parts

    cdef object eval(self, object scope):
        cdef dict built = {}
        cdef Py_ssize_t index
        for index in range(len(self.keys)):
            built[self.keys[index]] = (<Node>self.parts[index]).eval(scope)
        return built

    def __call__(self, scope):
        return self.eval(scope)


def build_tree(tree):
    """The compiled ``build`` of a FieldTree (entries: key and Value, or key and FieldTree)."""
    parts = []
    for key, item in tree.entries:
        if getattr(item, "entries", None) is not None:  # a nested FieldTree, compiled first
            nested = item.build
            parts.append(nested if type(nested) is TreeBuilder else node_of(nested))
        elif item.template is None and type(item.literal) not in (list, dict):
            parts.append(Const(item.literal))
        else:  # templates; list and map literals, copied on every call
            parts.append(node_of(item.render))
    return TreeBuilder(tuple(_intern(str(key)) for key, _ in tree.entries), tuple(parts))


# --- request bodies -------------------------------------------------------------------------

from cpython.dict cimport PyDict_Next
from libc.math cimport isfinite

cdef int _SCAN_DEPTH = 64
#: Containers the compiled scan visits before it hands the value to the twin: a list holding
#: one sublist twice, 40 times over, has 2**40 paths; the twin visits each container once.
cdef Py_ssize_t _SCAN_CONTAINERS = 100_000
#: _scan's answer when it met something only the Python twin handles.
cdef object _ASK_PYTHON = object()


cdef object _scan(object item, int depth, Py_ssize_t* budget):
    """NaN or infinity inside plain dicts and lists, recursively to a bounded depth.

    This walk runs no Python code at all (exact types only; children are owned by their
    containers, which nothing can change meanwhile), so it cannot meet a container changed under
    it. At anything deeper or of another kind it gives up with _ASK_PYTHON, and the caller
    scans the whole value with the Python twin: the result is the twin's by construction, even
    when a subclass or a custom Mapping runs code that changes the data while it is read. So
    does a value with more than _SCAN_CONTAINERS containers (shared sublists are walked at
    every use here; the twin walks each container once).
    """
    cdef Py_ssize_t position = 0
    cdef Py_ssize_t index, size
    cdef PyObject* key
    cdef PyObject* value
    cdef object child
    cdef object kind = type(item)
    cdef object found
    if kind is float:
        return None if isfinite(<double>item) else item
    if kind is str or kind is int or item is None or kind is bool:
        return None
    if depth >= _SCAN_DEPTH or budget[0] <= 0:
        return _ASK_PYTHON
    budget[0] -= 1
    if kind is dict:
        while PyDict_Next(item, &position, &key, &value):
            child = <object>value
            kind = type(child)
            if kind is str or kind is int or child is None or kind is bool:
                continue
            found = _scan(child, depth + 1, budget)
            if found is not None:
                return found
        return None
    if kind is list:
        size = PyList_GET_SIZE(item)
        for index in range(size):
            child = <object>PyList_GET_ITEM(item, index)
            kind = type(child)
            if kind is str or kind is int or child is None or kind is bool:
                continue
            found = _scan(child, depth + 1, budget)
            if found is not None:
                return found
        return None
    return _ASK_PYTHON


def first_non_finite(value):
    """The first NaN or infinity inside JSON-shaped ``value`` (a float), or None.

    The compiled twin of flowlang.expr.values.first_non_finite (orjson writes NaN and
    infinity as null, so bodies are scanned); a property test keeps the two equal.
    """
    cdef Py_ssize_t budget = _SCAN_CONTAINERS
    found = _scan(value, 0, &budget)
    if found is _ASK_PYTHON:
        return _values.first_non_finite(value)
    return found
# --- the rendered-size limit: JSON length, measured before the JSON is built ---------------

from cpython.unicode cimport PyUnicode_Check

cdef extern from "Python.h":
    Py_ssize_t PySequence_Fast_GET_SIZE(object sequence)  # a list or a tuple: no check
    PyObject** PySequence_Fast_ITEMS(object sequence)

cdef int _JSON_DEPTH = 64


cdef Py_ssize_t _digits_at_least(object value) except -1:
    """values._int_digits_at_least for an exact int, without Python calls for 64-bit ones."""
    cdef int overflow = 0
    cdef long long number = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long magnitude
    cdef Py_ssize_t bits = 0
    if overflow == 0:
        magnitude = (<unsigned long long>(-(number + 1)) + 1) if number < 0 else <unsigned long long>number
        while magnitude:
            bits += 1
            magnitude >>= 1
    else:
        bits = value.bit_length()
    bits = (bits * 3) // 10
    return bits if bits > 1 else 1


cdef Py_ssize_t _json_total(object item, Py_ssize_t total, Py_ssize_t limit, int depth,
                            PyObject** path) except -2:
    """``total`` plus the lower bound values.json_length_exceeds counts for ``item``.

    Exact built-in types only, so no Python code runs and nothing changes under the walk;
    returns as soon as the total passes ``limit``, and -1 (ask the Python twin, which starts
    over) at any other kind or deeper than _JSON_DEPTH. ``path`` holds the containers being
    walked: one met again inside itself counts as the null it is written as.
    """
    cdef object kind = type(item)
    cdef Py_ssize_t position = 0
    cdef Py_ssize_t index, size
    cdef PyObject** items
    cdef PyObject* key
    cdef PyObject* value
    cdef int level
    if kind is str:
        return total + PyUnicode_GET_LENGTH(item) + 2
    if item is None or kind is bool:
        return total + 4
    if kind is int:
        return total + _digits_at_least(item)
    if kind is float:
        return total + 3
    if kind is not list and kind is not dict and kind is not tuple:
        return -1
    for level in range(depth):
        if path[level] == <PyObject*>item:
            return total + 4
    if depth >= _JSON_DEPTH:
        return -1
    path[depth] = <PyObject*>item
    if kind is dict:
        size = len(<dict>item)
        total += 1 + (size if size > 1 else 1)
        while total <= limit and PyDict_Next(item, &position, &key, &value):
            if PyUnicode_Check(<object>key):
                total += PyUnicode_GET_LENGTH(<object>key) + 3
            else:
                total += 4
            total = _json_total(<object>value, total, limit, depth + 1, path)
            if total < 0:
                return -1
        return total
    # a list or a tuple: one walk over its item array (nothing changes it under the walk)
    size = PySequence_Fast_GET_SIZE(item)
    items = PySequence_Fast_ITEMS(item)
    total += 1 + (size if size > 1 else 1)
    index = 0
    while total <= limit and index < size:
        total = _json_total(<object>items[index], total, limit, depth + 1, path)
        if total < 0:
            return -1
        index += 1
    return total


def json_length_exceeds(value, Py_ssize_t limit):
    """The compiled twin of flowlang.expr.values.json_length_exceeds (same answer always: it
    counts the same lower bound, and hands anything but exact built-in types to the twin)."""
    cdef PyObject* path[64]
    cdef Py_ssize_t total = _json_total(value, 0, limit, 0, path)
    if total < 0:
        return _values.json_length_exceeds(value, limit)
    return total > limit

