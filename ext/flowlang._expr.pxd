# Declarations of flowlang._expr (ext/_expr.pyx) that the compiled runtime cimports: the node
# type every compiled template and field tree is made of, and the value helpers steps share.
# The dotted file name is how Cython finds the declarations of the module flowlang._expr
# while the sources stay in ext/ (there is no package directory here).

cdef class Node:
    cdef object eval(self, object context)


cdef class TreeBuilder(Node):
    cdef tuple keys
    cdef tuple parts


cdef bint truthy(object value) except -1
cdef str text_of(object value, Py_ssize_t limit=*)
cdef object _interned(object key)
cdef Node node_of(object render)
