"""Pictures of tailored architectures (Graphviz), drawn like Figure 4 of the NetTailor paper."""
from archsearch.render.draw import load_architecture, render, stack_dot, student_architecture, to_dot

__all__ = ["load_architecture", "render", "stack_dot", "student_architecture", "to_dot"]
